"""/{org_slug}/lab: pick a model or an agent, send a message, watch the answer stream in.

The page never takes a key: the call goes through the gateway's own path (services.proxy) as the
signed-in member's org, routed BYOK / platform / free exactly as an API call would be.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from alumia.clock import new_request_id
from alumia.container import Services, services_of
from alumia.domain.money import format_usd
from alumia.domain.routing import NoPlatformKey, decide_route
from alumia.errors import AppError, ErrorCode
from alumia.redact import looks_like_key
from alumia.services import agents, byok
from alumia.services.proxy import Caller, chat_completion
from alumia.sse import data_frame
from alumia.storage import usage
from alumia.web.session import Member, check_csrf, member
from alumia.web.templating import render

router = APIRouter(include_in_schema=False)
MemberDep = Annotated[Member, Depends(member)]
MAX_MESSAGE_CHARS = 20_000
ROUTE_MARKS = {"byok": "BYOK", "platform": "platform", "free": "free", "unavailable": "no key"}


def page_context(who: Member, active: str, **extra: object) -> dict[str, Any]:
    """What base.html needs: the person, the org, their role and the current tab."""
    org = next(o for o in who.user.orgs if o["id"] == who.principal.org_id)
    return {"user": who.user, "org": org, "role": who.principal.role, "active": active, **extra}


async def model_groups(gw: Services, who: Member) -> list[dict[str, Any]]:
    """The catalog by provider, each model with the route it would take for this org right now.

    BYOK matches by provider (docs/product.md): an active key for the provider wins; otherwise a free
    provider is free and a paid one goes through the platform account ("no key" when the platform has
    none configured, where only a BYOK key would make the call possible).
    """
    keys = {k["provider"]: k["id"] for k in await byok.list_keys(gw.db, who.principal)
            if k["status"] == "active"}
    groups: dict[str, dict[str, Any]] = {}
    for model in gw.catalog.models.values():
        if model.kind != "chat":  # the lab chats; embedding models are for /v1/embeddings
            continue
        provider = gw.catalog.provider_of(model)
        try:
            route = decide_route(provider, keys.get(provider.name),
                                 provider.name in gw.settings.platform_keys).route.value
        except NoPlatformKey:
            route = "unavailable"
        group = groups.setdefault(provider.name, {"provider": provider.name, "route": route, "models": []})
        group["models"].append({"id": model.id, "route": route, "mark": ROUTE_MARKS[route]})
    return list(groups.values())


@router.get("/{org_slug}/lab")
async def lab_page(request: Request, who: MemberDep) -> Response:
    """The lab: model (or agent) and message; the transcript lives only in the page."""
    gw: Services = services_of(request)
    live = [a for a in await agents.list_agents(gw.db, who.principal) if a["isActive"]]
    groups = await model_groups(gw, who)
    picked = request.query_params.get("agent", "")  # "Try it in the lab" from an agent's page
    return render(request, "lab.html", page_context(
        who, "lab", groups=groups, agents=live, picked=picked,
        default_model=live[0]["model"] if live else ""))


def _error(error: AppError) -> JSONResponse:
    return JSONResponse({"error": {"code": error.code, "message": error.message}}, status_code=error.status,
                        headers=error.headers)


def _lab_body(raw: bytes) -> tuple[str, str, str]:
    """model, agent, message from the page's JSON; the message is never echoed back."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AppError(ErrorCode.BAD_REQUEST, "send JSON: {model, agent, message}") from None
    if not isinstance(body, dict):
        raise AppError(ErrorCode.BAD_REQUEST, "send JSON: {model, agent, message}")
    model, agent, message = body.get("model") or "", body.get("agent") or "", body.get("message")
    if not isinstance(model, str) or not isinstance(agent, str):
        raise AppError(ErrorCode.VALIDATION_ERROR, "model and agent must be strings")
    if not isinstance(message, str) or not message.strip():
        raise AppError(ErrorCode.VALIDATION_ERROR, "type a message first")
    if len(message) > MAX_MESSAGE_CHARS:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"a message is at most {MAX_MESSAGE_CHARS} characters")
    return model, agent, message


async def _with_usage(gw: Services, org_id: str, request_id: str,
                      frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The gateway's OpenAI frames unchanged, then one `alumia` frame from the committed usage record."""
    try:
        async for frame in frames:
            yield frame
    finally:
        # A browser that leaves mid-answer closes this stream; close the gateway's now, so that it meters
        # the partial call at once rather than whenever the generator is collected.
        aclose = getattr(frames, "aclose", None)
        if aclose is not None:
            await aclose()
    async with gw.db.read() as conn:
        record = await usage.record_by_id(conn, org_id, request_id)
    if record is None:  # cannot happen: the stream commits its record before its last frame
        return
    charged = int(record["charged_microcents"])
    summary = {"route": record["route"], "requestId": request_id, "inputTokens": int(record["input_tokens"]),
               "outputTokens": int(record["output_tokens"]), "chargedMicrocents": charged,
               "charged": format_usd(charged), "byok": bool(record["byok"])}
    yield data_frame({"alumia": summary})


@router.post("/{org_slug}/lab/chat")
async def lab_chat(request: Request, who: MemberDep) -> Response:
    """One streamed call as the member's org (and agent, when one is picked); errors as JSON."""
    gw: Services = services_of(request)
    try:
        check_csrf(request, who.user, request.headers.get("x-csrf-token"))
        model, agent_ref, message = _lab_body(await request.body())
        if looks_like_key(message):
            raise AppError(ErrorCode.KEY_NOT_ALLOWED,
                           "that message contains something shaped like a provider key "
                           f"and was not sent; keys belong in Billing (/{who.principal.org_slug}/billing), "
                           "never in the lab", status=422)
        messages: list[dict[str, Any]] = []
        agent_id = None
        if agent_ref:
            agent = await agents.get_agent(gw.db, who.principal, agent_ref)
            agent_id, model = agent["id"], agent["model"]
            if agent["systemPrompt"].strip():
                messages.append({"role": "system", "content": agent["systemPrompt"]})
        if not model:
            raise AppError(ErrorCode.VALIDATION_ERROR, "pick a model or an agent")
        messages.append({"role": "user", "content": message})
        raw = orjson.dumps({"model": model, "messages": messages, "stream": True,
                            "stream_options": {"include_usage": True}})
        request_id = new_request_id()
        outcome = await chat_completion(gw, Caller(org_id=who.principal.org_id, agent=agent_id), raw,
                                        request_id)
    except AppError as error:
        return _error(error)
    assert outcome.stream is not None
    return StreamingResponse(_with_usage(gw, who.principal.org_id, request_id, outcome.stream),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                      "X-Alumia-Route": outcome.route.value,
                                      "X-Alumia-Request-Id": request_id})

"""POST /v1/responses and the stored responses' GET, input_items and DELETE: OpenAI's Responses API.

A Responses request is translated to a chat completion (gateway/responses_request.py) and goes through
the gateway's one call path (services/proxy.complete: routing, BYOK, the hold, the stream's ceiling,
key redaction, metering, agent attribution), then its answer or stream is translated back
(gateway/responses_answer.py). With `store` (the default) the Response and its input items are kept
for the org (services/stored_responses.py), which `previous_response_id` and the GET, input_items and
DELETE endpoints read. Every error is in OpenAI's shape.
"""

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from alumia.clock import new_request_id
from alumia.container import Services, services_of
from alumia.domain.call_record import Api
from alumia.errors import AppError, ErrorCode
from alumia.gateway.admission import admit_request
from alumia.gateway.errors import in_client_terms, openai_error
from alumia.gateway.responses_answer import ResponseEventStream, answer_response
from alumia.gateway.responses_request import ResponsesRequest, chat_view, new_id, parse_request
from alumia.json_body import json_object
from alumia.services import stored_responses
from alumia.services.proxy import complete
from alumia.storage.db import DATABASE_DOWN

# The chat fields this door translates into, by the Responses field the client wrote: a refusal of a
# feature the provider lacks (providers/features.py) names what the client actually sent.
_CLIENT_FIELDS = {"reasoning_effort": "reasoning.effort", "response_format": "text.format",
                  "max_completion_tokens": "max_output_tokens"}

log = logging.getLogger("alumia.gateway")

MAX_ITEMS_PAGE = 100
DEFAULT_ITEMS_PAGE = 20

Store = Callable[[dict[str, Any]], Awaitable[None]]


def _json(body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), headers=headers, media_type="application/json")


def _keeper(gw: Services, org_id: str, call: ResponsesRequest) -> Store:
    """Stores a finished Response with the request's input items, when the request asked for it."""

    async def keep(response: dict[str, Any]) -> None:
        if not call.store:
            return
        try:
            await stored_responses.store(gw.db, org_id, response, list(call.items))
        except DATABASE_DOWN as exc:
            # The call is answered and paid for; only a later previous_response_id will miss it.
            log.error("response %s could not be stored: %s", response["id"], type(exc).__name__)

    return keep


async def _events(stream: AsyncIterator[bytes], translator: ResponseEventStream,
                  keep: Store) -> AsyncIterator[bytes]:
    try:
        for event in translator.start():
            yield event
        async for frame in stream:
            events = translator.feed(frame)
            if translator.final is not None:
                await keep(translator.final)  # stored before the client can ask for it by id
            for event in events:
                yield event
            if translator.done:
                break
        if not translator.done:
            events = translator.close()
            if translator.final is not None:
                await keep(translator.final)
            for event in events:
                yield event
    finally:
        # Closing the gateway's stream now (not at garbage collection) meters a client that went away.
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def create_response(request: Request) -> Response:
    """Answer a Responses request, JSON or SSE, through the gateway's chat completion."""
    gw: Services = services_of(request)
    request_id = new_request_id()
    started = time.perf_counter()
    try:
        # Authenticated before the body is read: a stranger's body is never buffered.
        ctx = await admit_request(gw, request)
        call = parse_request(json_object(await request.body()))
        history = (await stored_responses.conversation(gw.db, ctx.org_id, call.previous_response_id,
                                                       gw.settings.responses_retention_days)
                   if call.previous_response_id else [])
        model = gw.catalog.model(call.model)
        provider = gw.catalog.provider_of(model) if model is not None else None
        view = chat_view(call, history, provider)
        outcome = await complete(gw, ctx, orjson.dumps(view), request_id, started, api=Api.RESPONSES)
    except AppError as error:
        return openai_error(in_client_terms(error, _CLIENT_FIELDS), request_id)
    assert provider is not None  # the call found its model, or complete() raised NOT_FOUND
    headers = {"X-Alumia-Route": outcome.route.value, "X-Alumia-Request-Id": request_id}
    response_id, created_at = new_id("resp"), int(time.time())
    keep = _keeper(gw, ctx.org_id, call)
    if outcome.stream is not None:
        translator = ResponseEventStream(call, response_id, created_at, provider.name)
        return StreamingResponse(_events(outcome.stream, translator, keep), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})
    answer = answer_response(call, response_id, created_at, outcome.body, provider.name)
    await keep(answer)
    return _json(answer, headers)


async def retrieve_response(request: Request) -> Response:
    """GET /v1/responses/{id}: the org's stored Response."""
    gw: Services = services_of(request)
    request_id = new_request_id()
    try:
        ctx = await admit_request(gw, request)
        response, _items = await stored_responses.retrieve(
            gw.db, ctx.org_id, request.path_params["response_id"], gw.settings.responses_retention_days)
    except AppError as error:
        return openai_error(error, request_id)
    return _json(response, {"X-Alumia-Request-Id": request_id})


def _page(items: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    """One page of input items as OpenAI lists them: `order` (desc by default), `after`, `limit`."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise AppError(ErrorCode.VALIDATION_ERROR, "order: must be asc or desc")
    try:
        limit = int(query.get("limit", DEFAULT_ITEMS_PAGE))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_ITEMS_PAGE:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"limit: must be an integer from 1 to {MAX_ITEMS_PAGE}")
    if query.get("include"):
        raise AppError(ErrorCode.BAD_REQUEST, "include: not supported by this gateway")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise AppError(ErrorCode.VALIDATION_ERROR, "after: names no item of this response")
        ordered = ordered[ids.index(after) + 1:]
    data = ordered[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > limit}


async def list_input_items(request: Request) -> Response:
    """GET /v1/responses/{id}/input_items: the input items of the org's stored Response, paged."""
    gw: Services = services_of(request)
    request_id = new_request_id()
    try:
        ctx = await admit_request(gw, request)
        _response, items = await stored_responses.retrieve(
            gw.db, ctx.org_id, request.path_params["response_id"], gw.settings.responses_retention_days)
        page = _page(items, request.query_params)
    except AppError as error:
        return openai_error(error, request_id)
    return _json(page, {"X-Alumia-Request-Id": request_id})


async def delete_response(request: Request) -> Response:
    """DELETE /v1/responses/{id}: the org's stored Response and its input items, gone."""
    gw: Services = services_of(request)
    request_id = new_request_id()
    response_id = request.path_params["response_id"]
    try:
        ctx = await admit_request(gw, request)
        await stored_responses.delete(gw.db, ctx.org_id, response_id, gw.settings.responses_retention_days)
    except AppError as error:
        return openai_error(error, request_id)
    return _json({"id": response_id, "object": "response", "deleted": True},
                 {"X-Alumia-Request-Id": request_id})


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
]

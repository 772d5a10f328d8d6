"""POST /v1/messages: the Anthropic-shaped front door over the same gateway call as chat completions."""

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from alumia.bearer import bearer_token
from alumia.clock import new_request_id
from alumia.errors import AppError
from alumia.gateway.anthropic_front import AnthropicEventStream, anthropic_message, error_body, openai_request
from alumia.json_body import json_object
from alumia.services import accounts
from alumia.services.proxy import MAX_BODY_BYTES, Caller, Gateway, chat_completion


def _api_key(request: Request) -> str | None:
    """The alm_ key from x-api-key (what the anthropic SDK sends) or Authorization: Bearer."""
    return request.headers.get("x-api-key") or bearer_token(request.headers)


async def _openai_body(gw: Gateway, key: str | None, raw: bytes) -> dict:
    try:
        if len(raw) > MAX_BODY_BYTES:
            raise AppError("PAYLOAD_TOO_LARGE", f"request body is over {MAX_BODY_BYTES} bytes")
        return openai_request(json_object(raw))
    except AppError:
        # As on chat completions: a stranger gets 401 first.
        await accounts.authenticate(gw.db, key, production=gw.settings.is_production)
        raise


async def _events(stream: AsyncIterator[bytes], model: str) -> AsyncIterator[bytes]:
    translator = AnthropicEventStream(model)
    try:
        async for frame in stream:
            for event in translator.feed(frame):
                yield event
        for event in translator.close():
            yield event
    finally:
        # Closing the gateway's stream now (not at garbage collection) meters a client that went away.
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def messages(request: Request) -> Response:
    """Answer an Anthropic Messages request, JSON or SSE, through the gateway's chat completion."""
    gw: Gateway = request.app.state.gateway
    request_id = new_request_id()
    key = _api_key(request)
    try:
        body = await _openai_body(gw, key, await request.body())
        caller = Caller(bearer=key, agent=request.headers.get("x-alumia-agent"))
        outcome = await chat_completion(gw, caller, orjson.dumps(body), request_id)
    except AppError as error:
        headers = {"X-Alumia-Request-Id": request_id, "request-id": request_id, **error.headers}
        return Response(orjson.dumps(error_body(error, request_id)), status_code=error.status,
                        headers=headers, media_type="application/json")
    headers = {"X-Alumia-Route": outcome.route.value, "X-Alumia-Request-Id": request_id,
               "request-id": request_id}
    if outcome.stream is not None:
        return StreamingResponse(_events(outcome.stream, body["model"]), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})
    message = orjson.dumps(anthropic_message(orjson.loads(outcome.body)))
    return Response(message, status_code=outcome.status, headers=headers, media_type="application/json")


routes = [Route("/v1/messages", messages, methods=["POST"])]

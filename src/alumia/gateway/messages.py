"""POST /v1/messages: the Anthropic-shaped front door over the same gateway call as chat completions."""

import time
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from alumia.bearer import bearer_token
from alumia.clock import new_request_id
from alumia.container import Services, services_of
from alumia.errors import AppError
from alumia.gateway.anthropic_front import AnthropicEventStream, anthropic_message, error_body, openai_request
from alumia.json_body import json_object
from alumia.services.proxy import Caller, admit, complete


def _api_key(request: Request) -> str | None:
    """The alm_ key from x-api-key (what the anthropic SDK sends) or Authorization: Bearer."""
    return request.headers.get("x-api-key") or bearer_token(request.headers)


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
    gw: Services = services_of(request)
    request_id = new_request_id()
    started = time.perf_counter()
    try:
        # Authenticated before the body is read: a stranger's body is never buffered.
        ctx = await admit(gw, Caller(bearer=_api_key(request), agent=request.headers.get("x-alumia-agent")))
        body = openai_request(json_object(await request.body()))  # its size bounded as it arrives
        outcome = await complete(gw, ctx, orjson.dumps(body), request_id, started)
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

"""POST /v1/messages and /v1/messages/count_tokens: the Anthropic-shaped front door.

Messages go through the same gateway call as chat completions (natively to Claude,
gateway/messages_call.py); token counts are free and never reach the ledger (services/token_count.py).
"""

import time
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from alumia.clock import new_request_id
from alumia.container import Services, services_of
from alumia.domain.call_record import Api
from alumia.errors import AppError
from alumia.gateway.admission import admit_request
from alumia.gateway.anthropic_front import AnthropicEventStream, anthropic_answer, error_body, openai_request
from alumia.gateway.anthropic_thinking import parse_thinking
from alumia.gateway.errors import in_client_terms
from alumia.gateway.messages_call import messages_call
from alumia.json_body import json_object
from alumia.services.proxy import complete
from alumia.services.token_count import count_tokens as count

# Says whose count an answer of count_tokens is: the provider's own, or the gateway's estimate.
TOKEN_COUNT_HEADER = "X-Alumia-Token-Count"
# The chat fields the Messages door translates into, by the Messages field the client wrote: a refusal
# of a feature the provider lacks (providers/features.py) names the field the client actually sent.
_CLIENT_FIELDS = {"parallel_tool_calls": "tool_choice.disable_parallel_tool_use", "stop": "stop_sequences"}


def _error(error: AppError, request_id: str) -> Response:
    headers = {"X-Alumia-Request-Id": request_id, "request-id": request_id, **error.headers}
    return Response(orjson.dumps(error_body(error, request_id)), status_code=error.status,
                    headers=headers, media_type="application/json")


async def _events(stream: AsyncIterator[bytes], model: str, thinking: bool) -> AsyncIterator[bytes]:
    translator = AnthropicEventStream(model, thinking=thinking)
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
        ctx = await admit_request(gw, request, x_api_key=True)
        # Its size bounded as it arrives.
        call = messages_call(json_object(await request.body()), gw.catalog)
        outcome = await complete(gw, ctx, call.raw, request_id, started, adapt=call.adapt, api=Api.MESSAGES)
    except AppError as error:
        return _error(in_client_terms(error, _CLIENT_FIELDS), request_id)
    headers = {"X-Alumia-Route": outcome.route.value, "X-Alumia-Request-Id": request_id,
               "request-id": request_id}
    if outcome.stream is not None:
        events = _events(outcome.stream, call.model, call.thinking)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})
    message = orjson.dumps(anthropic_answer(outcome.body, thinking=call.thinking))
    return Response(message, status_code=outcome.status, headers=headers, media_type="application/json")


async def count_tokens(request: Request) -> Response:
    """Count a Messages request's input tokens, Anthropic's `{"input_tokens": N}`; nothing is charged.

    The X-Alumia-Token-Count header says `provider` (Anthropic's own count) or `estimate` (the
    gateway's, for a model whose provider has no count endpoint).
    """
    gw: Services = services_of(request)
    request_id = new_request_id()
    try:
        ctx = await admit_request(gw, request, x_api_key=True)
        body = json_object(await request.body())
        view = openai_request(body, counting=True)
        parse_thinking(body.get("thinking"), None)
        counted = await count(gw, ctx, body, view)
    except AppError as error:
        return _error(error, request_id)
    headers = {TOKEN_COUNT_HEADER: counted.source, "X-Alumia-Request-Id": request_id,
               "request-id": request_id}
    if counted.route is not None:
        headers["X-Alumia-Route"] = counted.route.value
    return Response(orjson.dumps({"input_tokens": counted.input_tokens}), headers=headers,
                    media_type="application/json")


routes = [Route("/v1/messages", messages, methods=["POST"]),
          Route("/v1/messages/count_tokens", count_tokens, methods=["POST"])]

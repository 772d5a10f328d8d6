"""The OpenAI-compatible gateway: POST /v1/chat/completions, GET /v1/models and /v1/models/{id}."""

import time
from datetime import UTC, datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from alumia.bearer import bearer_token
from alumia.clock import new_request_id
from alumia.container import Services, services_of
from alumia.domain.catalog import Model
from alumia.errors import AppError, ErrorCode
from alumia.gateway.admission import admit_request
from alumia.gateway.errors import openai_error
from alumia.services import accounts
from alumia.services.proxy import complete

# /v1/models needs a `created` time per model; the catalog's release date stands in for all of them.
_CATALOG_CREATED = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())


async def chat_completions(request: Request) -> Response:
    """Route, send, meter; answer in OpenAI's shape (JSON or SSE)."""
    gw: Services = services_of(request)
    request_id = new_request_id()
    started = time.perf_counter()
    try:
        # Authenticated before the body is read: a stranger's body is never buffered.
        ctx = await admit_request(gw, request)
        outcome = await complete(gw, ctx, await request.body(), request_id, started)
    except AppError as error:
        return openai_error(error, request_id)
    headers = {"X-Alumia-Route": outcome.route.value, "X-Alumia-Request-Id": request_id}
    if outcome.stream is not None:
        return StreamingResponse(outcome.stream, media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})
    return Response(outcome.body, status_code=outcome.status, headers=headers,
                    media_type="application/json")


async def list_models(request: Request) -> Response:
    """The catalog as OpenAI's model list; owned_by is the provider."""
    gw: Services = services_of(request)
    try:
        await accounts.authenticate(gw.db, bearer_token(request.headers),
                                    production=gw.settings.is_production)
    except AppError as error:
        return openai_error(error, new_request_id())
    data = [_model_object(m) for m in gw.catalog.models.values()]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def retrieve_model(request: Request) -> Response:
    """One catalog model as OpenAI's model object; a `provider/id` alias answers with the catalog id."""
    gw: Services = services_of(request)
    try:
        await accounts.authenticate(gw.db, bearer_token(request.headers),
                                    production=gw.settings.is_production)
        model = gw.catalog.model(request.path_params["model_id"])
        if model is None:
            raise AppError(ErrorCode.NOT_FOUND,
                           "the requested model is not in the catalog; see GET /v1/models")
    except AppError as error:
        return openai_error(error, new_request_id())
    return Response(orjson.dumps(_model_object(model)), media_type="application/json")


def _model_object(model: Model) -> dict[str, str | int]:
    # `kind` ("chat" or "embedding") rides beside OpenAI's fields: which endpoint takes the model.
    return {"id": model.id, "object": "model", "created": _CATALOG_CREATED, "owned_by": model.provider,
            "kind": model.kind}


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    # Catalog ids can hold a slash (`openai/gpt-oss-20b`), and so do aliases: the rest of the path.
    Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
]

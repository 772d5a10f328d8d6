"""POST /v1/embeddings: OpenAI's embeddings API over the gateway's call path."""

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from alumia.clock import new_request_id
from alumia.container import Services, services_of
from alumia.errors import AppError
from alumia.gateway.admission import admit_request
from alumia.gateway.errors import openai_error
from alumia.services.embeddings import embed


async def embeddings(request: Request) -> Response:
    """Route, send, meter; answer in OpenAI's CreateEmbeddingResponse shape."""
    gw: Services = services_of(request)
    request_id = new_request_id()
    started = time.perf_counter()
    try:
        # Authenticated before the body is read: a stranger's body is never buffered.
        ctx = await admit_request(gw, request)
        outcome = await embed(gw, ctx, await request.body(), request_id, started)
    except AppError as error:
        return openai_error(error, request_id)
    headers = {"X-Alumia-Route": outcome.route.value, "X-Alumia-Request-Id": request_id}
    return Response(outcome.body, status_code=outcome.status, headers=headers, media_type="application/json")


routes = [Route("/v1/embeddings", embeddings, methods=["POST"])]

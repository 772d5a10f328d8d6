"""The simulated upstream: every provider of the catalog behind one Starlette app.

It is the baseline the gateway's benchmark is measured against, so a call does only what its answer
needs: routes are built once, listed models are encoded once, and nothing is logged per request.

Each wire format lives in its own module exposing ``routes(provider, prefix, model_ids, log)``;
providers whose format has no module yet (anthropic, gemini) are simply not served, and get a 404.
"""

from collections.abc import Callable, Sequence

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from alumia.domain.catalog import load_catalog
from alumia.sim import openai_format
from alumia.sim.calls import CallLog
from alumia.sim.env import sim_path_prefix

RoutesOf = Callable[[str, str, Sequence[str], CallLog], list[Route]]

# Wire format -> the module that speaks it. anthropic_format and gemini_format slot in here.
WIRE_FORMATS: dict[str, RoutesOf] = {
    "openai": openai_format.routes,
}


def _calls_routes(log: CallLog) -> list[BaseRoute]:
    async def calls(request: Request) -> Response:
        if request.method == "DELETE":
            log.clear()
            return Response(status_code=204)
        return Response(orjson.dumps({"calls": log.snapshot()}), media_type="application/json")

    return [Route("/_sim/calls", calls, methods=["GET", "DELETE"])]


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods answer in OpenAI's error envelope, as api.openai.com does, instead of
    # Starlette's plain-text default, so a misrouted gateway call fails with a parseable body.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = (f"Invalid URL ({request.method} {request.url.path})" if status == 404
               else f"Method {request.method} not allowed on {request.url.path}" if status == 405
               else "Internal error")
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    headers = exc.headers if isinstance(exc, HTTPException) else None  # keeps a 405's Allow header
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def create_sim_app(log: CallLog | None = None) -> Starlette:
    """The simulator app; every provider whose wire format is implemented is served under its prefix."""
    log = log if log is not None else CallLog()
    catalog = load_catalog()
    routes: list[BaseRoute] = _calls_routes(log)
    for name, provider in catalog.providers.items():
        routes_of = WIRE_FORMATS.get(provider.wire_format)
        if routes_of is None:
            continue
        model_ids = [m.id for m in catalog.models.values() if m.provider == name]
        routes.extend(routes_of(name, sim_path_prefix(name), model_ids, log))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.calls = log
    return app

"""The simulated upstream: every provider of the catalog behind one Starlette app.

It is the baseline the gateway's benchmark is measured against, so a call does only what its answer
needs: routes are built once, listed models are encoded once, and nothing is logged per request.

Embeddings (`alumia.sim.embeddings`) are served for every provider with an embedding model.
Each wire format lives in its own module exposing ``routes(provider, prefix, model_ids, log, held)``:
`openai_format` for the 12 OpenAI-compatible providers, `anthropic_format` and `gemini_format` for the
other two. Any of them can be told to misbehave per call (`alumia.sim.faults`).

Control routes, for tests: ``GET /_sim/calls`` (the calls received) and ``DELETE`` (forget them),
``POST /_sim/revoke`` (reject a key from now on), ``GET /_sim/held`` (``{"held": n}``, the calls
waiting under ``[[sim:hold]]``) and ``POST /_sim/release`` (let them all go on; ``{"released": n}``).
"""

from collections.abc import Callable, Sequence
from functools import partial

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from alumia.domain.catalog import load_catalog
from alumia.sim import anthropic_format, embeddings, gemini_format, openai_format
from alumia.sim.calls import CallLog
from alumia.sim.env import sim_path_prefix
from alumia.sim.errors import anthropic_error, google_error
from alumia.sim.held import HOLD_TIMEOUT_SECONDS, HeldCalls

RoutesOf = Callable[[str, str, Sequence[str], CallLog, HeldCalls], list[Route]]

# Wire format -> the module that speaks it.
WIRE_FORMATS: dict[str, RoutesOf] = {
    "openai": openai_format.routes,
    "anthropic": anthropic_format.routes,
    "gemini": gemini_format.routes,
}


def _control_routes(log: CallLog, held: HeldCalls) -> list[BaseRoute]:
    async def calls(request: Request) -> Response:
        if request.method == "DELETE":
            log.clear()
            return Response(status_code=204)
        return Response(orjson.dumps({"calls": log.snapshot()}), media_type="application/json")

    async def revoke(request: Request) -> Response:
        body = orjson.loads(await request.body())
        log.revoke(str(body["keySha256"]))
        return Response(status_code=204)

    async def held_count(request: Request) -> Response:
        return Response(orjson.dumps({"held": held.count}), media_type="application/json")

    async def release(request: Request) -> Response:
        return Response(orjson.dumps({"released": held.release()}), media_type="application/json")

    return [Route("/_sim/calls", calls, methods=["GET", "DELETE"]),
            Route("/_sim/revoke", revoke, methods=["POST"]),
            Route("/_sim/held", held_count, methods=["GET"]),
            Route("/_sim/release", release, methods=["POST"])]


def _wire_format_of(request: Request) -> str:
    """The wire format of the provider whose prefix the path is under; "openai" for any other path."""
    name = request.url.path.split("/", 2)[1] if request.url.path.startswith("/") else ""
    wire_formats: dict[str, str] = request.app.state.wire_formats
    return wire_formats.get(name, "openai")


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods answer in an error envelope instead of Starlette's plain-text default,
    # so a misrouted gateway call fails with a parseable body: Anthropic's or Google's under those
    # providers' prefixes, OpenAI's (as api.openai.com does) everywhere else.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = (f"Invalid URL ({request.method} {request.url.path})" if status == 404
               else f"Method {request.method} not allowed on {request.url.path}" if status == 405
               else "Internal error")
    headers = exc.headers if isinstance(exc, HTTPException) else None  # keeps a 405's Allow header
    wire_format = _wire_format_of(request)
    if wire_format == "anthropic":
        reply = anthropic_error(status, message)
        return Response(reply.body, status_code=status, media_type=reply.media_type,
                        headers={**dict(reply.headers), **(headers or {})})
    if wire_format == "gemini":
        reply = google_error(status, message)
        return Response(reply.body, status_code=status, media_type=reply.media_type, headers=headers)
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def create_sim_app(log: CallLog | None = None, *, hold_timeout: float = HOLD_TIMEOUT_SECONDS) -> Starlette:
    """The simulator app; every provider whose wire format is implemented is served under its prefix.

    `hold_timeout` is how long a ``[[sim:hold]]`` call waits for a release before answering anyway.
    """
    log = log if log is not None else CallLog()
    held = HeldCalls(hold_timeout)
    catalog = load_catalog()
    routes: list[BaseRoute] = _control_routes(log, held)
    for name, provider in catalog.providers.items():
        routes_of = WIRE_FORMATS.get(provider.wire_format)
        if routes_of is None:
            continue
        model_ids = [m.id for m in catalog.models.values() if m.provider == name]
        prefix = sim_path_prefix(name)
        # Embeddings first: Gemini's `models/{model}:batchEmbedContents` is also a `models/{target}`.
        if specs := embeddings.embedding_specs(catalog.models, name):
            if provider.wire_format == "gemini":
                routes.extend(embeddings.gemini_routes(name, prefix, specs, log))
            else:
                routes.extend(embeddings.openai_routes(name, prefix, specs, log,
                                                       native_base64=provider.embeddings_base64))
        if provider.wire_format == "openai":
            # Each OpenAI-format provider reads its own limit field and honours n or refuses it.
            assert provider.limit_field is not None
            routes_of = partial(openai_format.routes, limit_field=provider.limit_field,
                                supports_n=provider.supports_n)
        routes.extend(routes_of(name, prefix, model_ids, log, held))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.calls = log
    app.state.held = held
    app.state.wire_formats = {name: provider.wire_format for name, provider in catalog.providers.items()}
    return app

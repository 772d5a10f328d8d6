"""The model calls' own door: from the server straight to their handlers.

Model calls are the hot path (an agent makes one every step). They skip the framework's layers —
routing, dependency injection, exception and telemetry middleware — which cost microseconds on every
call and which these handlers do not use: each handler authenticates, reads its body and renders its
own errors. What every route must have, the body and concurrency limits and the security headers,
wraps both doors (app.py). Any other method or path goes on to the framework, which answers it as
before (405 for another method on these paths, the JSON 404 under /v1/).
"""

import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from alumia.errors import AppError, ErrorCode
from alumia.storage.db import DATABASE_DOWN

log = logging.getLogger("alumia.gateway")

Handler = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[Request, AppError], Response]


def _database_down() -> AppError:
    return AppError(ErrorCode.SERVICE_UNAVAILABLE,
                    "the service cannot reach its database; nothing was changed. "
                    "Try again shortly", headers={"Retry-After": "2"})


class ModelCallDoor:
    """Dispatches `(method, path)` pairs to their handlers; everything else to `framework`."""

    def __init__(self, routes: Mapping[tuple[str, str], Handler], framework: ASGIApp,
                 render_error: ErrorRenderer) -> None:
        self._routes = dict(routes)
        self._framework = framework
        self._render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a model call, or pass the request on."""
        handler = self._routes.get((scope.get("method", ""), scope.get("path", "")))
        if handler is None or scope["type"] != "http":
            await self._framework(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except AppError as error:  # raised past the handler's own catch: a body limit, say
            response = self._render_error(request, error)
        except DATABASE_DOWN as exc:
            log.error("database unavailable during %s %s: %s", request.method, request.url.path,
                      type(exc).__name__)
            response = self._render_error(request, _database_down())
        await response(scope, receive, send)

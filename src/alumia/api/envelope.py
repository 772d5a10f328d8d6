"""The management API's envelope: {"success": true, "data"} or {"success": false, "error": {...}}.

Also where an error no handler rendered (an unknown path, a wrong method, a refused request) gets the
shape of the path it was sent to: OpenAI's under /v1/, Anthropic's under /v1/messages, the envelope
under /api/, and an error page anywhere else.
"""

import logging
from collections.abc import Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from alumia.clock import new_request_id
from alumia.errors import AppError, ErrorCode
from alumia.gateway.anthropic_front import error_body as anthropic_error_body
from alumia.gateway.errors import openai_error
from alumia.http_limits import Reject

log = logging.getLogger("alumia.api")

_CODE_BY_STATUS = {400: ErrorCode.BAD_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN,
                   404: ErrorCode.NOT_FOUND, 405: ErrorCode.BAD_REQUEST, 409: ErrorCode.CONFLICT,
                   413: ErrorCode.PAYLOAD_TOO_LARGE, 422: ErrorCode.VALIDATION_ERROR,
                   429: ErrorCode.TOO_MANY_REQUESTS}


def ok(data: object, status: int = 200) -> JSONResponse:
    """A success envelope."""
    return JSONResponse({"success": True, "data": data}, status_code=status)


def fail(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error envelope."""
    return JSONResponse({"success": False, "error": {"code": code, "message": message}},
                        status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default 422 echoes the input back; ours names the fields only, so a key never returns.
    problems = "; ".join(f"{_field(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}"
                         for e in exc.errors())
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return fail("BAD_REQUEST", "request body is not valid JSON", 400)
    return fail("VALIDATION_ERROR", problems or "invalid request", 422)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _CODE_BY_STATUS.get(exc.status_code, ErrorCode.BAD_REQUEST)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return fail(code, message, exc.status_code)


PageRenderer = Callable[[Request, int, str], Response]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def error_response(request: Request, error: AppError, page: PageRenderer) -> Response:
    """`error` in the shape of the request's path; the gateway's answers carry a new request id."""
    path = request.url.path
    if _under(path, "/v1/messages"):
        request_id = new_request_id()
        return Response(orjson.dumps(anthropic_error_body(error, request_id)), status_code=error.status,
                        media_type="application/json",
                        headers={"X-Alumia-Request-Id": request_id, "request-id": request_id,
                                 **error.headers})
    if _under(path, "/v1"):
        return openai_error(error, new_request_id())
    if path.startswith("/api/"):
        return fail(error.code, error.message, error.status, error.headers)
    response = page(request, error.status, error.message)
    response.headers.update(error.headers)
    return response


def rejecter(page: PageRenderer) -> Reject:
    """`error_response` for a request no route has seen yet (HttpLimits' refusals)."""
    return lambda scope, error: error_response(Request(scope), error, page)


def _http_app_error(request: Request, exc: StarletteHTTPException) -> AppError:
    """Starlette's 404 and 405 (no route, wrong method) as the gateway's AppError."""
    if exc.status_code == 404:
        return AppError(ErrorCode.NOT_FOUND, "no such endpoint; the gateway serves /v1/chat/completions, "
                        "/v1/messages and /v1/models")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return AppError(ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here; use {allowed}",
                        headers=dict(exc.headers or {}))
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return AppError(_CODE_BY_STATUS.get(exc.status_code, ErrorCode.BAD_REQUEST), message,
                    status=exc.status_code, headers=dict(exc.headers or {}))


def install_error_handlers(app: FastAPI, page: PageRenderer) -> None:
    """Errors in the shape of their path (`error_response`); anywhere but /v1/ and /api/, a page."""

    async def app_error(request: Request, exc: AppError) -> Response:
        return error_response(request, exc, page)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return await _http_error(request, exc)
        if _under(request.url.path, "/v1"):
            return error_response(request, _http_app_error(request, exc), page)
        message = "page not found" if exc.status_code == 404 else "request failed"
        return page(request, exc.status_code, message)

    async def database_down(request: Request, exc: Exception) -> Response:
        # A database that went away (or a pooled connection it cut): the caller may retry; nothing
        # was changed, since every write is one transaction.
        log.error("database unavailable during %s %s: %s", request.method, request.url.path,
                  type(exc).__name__)
        return error_response(request, AppError(
            ErrorCode.SERVICE_UNAVAILABLE, "the service cannot reach its database; nothing was changed. "
            "Try again shortly", headers={"Retry-After": "2"}), page)

    for kind in (DBAPIError, SQLAlchemyTimeoutError, ConnectionError):
        app.add_exception_handler(kind, database_down)
    app.add_exception_handler(AppError, app_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]

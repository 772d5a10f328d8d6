"""The management API's envelope: {"success": true, "data"} or {"success": false, "error": {...}}."""

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from alumia.errors import AppError

_CODE_BY_STATUS = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                   405: "BAD_REQUEST", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE",
                   422: "VALIDATION_ERROR", 429: "TOO_MANY_REQUESTS"}


def ok(data: object, status: int = 200) -> JSONResponse:
    """A success envelope."""
    return JSONResponse({"success": True, "data": data}, status_code=status)


def fail(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error envelope."""
    return JSONResponse({"success": False, "error": {"code": code, "message": message}},
                        status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
    return fail(exc.code, exc.message, exc.status, exc.headers)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default 422 echoes the input back; ours names the fields only, so a key never returns.
    problems = "; ".join(f"{_field(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}"
                         for e in exc.errors())
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return fail("BAD_REQUEST", "request body is not valid JSON", 400)
    return fail("VALIDATION_ERROR", problems or "invalid request", 422)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _CODE_BY_STATUS.get(exc.status_code, "BAD_REQUEST")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return fail(code, message, exc.status_code)


PageRenderer = Callable[[Request, int, str], Response]


def install_error_handlers(app: FastAPI, page: PageRenderer) -> None:
    """Errors of /api/... in the envelope; anywhere else (the dashboard) as a page from `page`."""

    async def app_error(request: Request, exc: AppError) -> Response:
        if request.url.path.startswith("/api/"):
            return await _app_error(request, exc)
        return page(request, exc.status, exc.message)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return await _http_error(request, exc)
        message = "page not found" if exc.status_code == 404 else "request failed"
        return page(request, exc.status_code, message)

    app.add_exception_handler(AppError, app_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]

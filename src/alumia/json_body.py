"""Parsing a request body as a JSON object, with errors that never echo the body."""

from typing import Any

import orjson

from alumia.errors import AppError, ErrorCode


def json_object(raw: bytes) -> dict[str, Any]:
    """The body as a dict, or BAD_REQUEST."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AppError(ErrorCode.BAD_REQUEST, "request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise AppError(ErrorCode.BAD_REQUEST, "request body must be a JSON object")
    return body

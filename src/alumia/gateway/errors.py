"""Errors on the gateway, in OpenAI's error shape so that any OpenAI client reads them."""

from collections.abc import Mapping

import orjson
from starlette.responses import Response

from alumia.errors import AppError

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(error: AppError, request_id: str) -> Response:
    """{"error": {"message", "type", "param", "code"}} with our code and the request id header."""
    body = {"error": {"message": error.message, "type": _TYPE_BY_STATUS.get(error.status, "api_error"),
                      "param": None, "code": error.code}}
    headers = {"X-Alumia-Request-Id": request_id, **error.headers}
    return Response(orjson.dumps(body), status_code=error.status, headers=headers,
                    media_type="application/json")


def in_client_terms(error: AppError, fields: Mapping[str, str]) -> AppError:
    """A refusal naming a chat field (`reasoning_effort: ...`) renamed to the field the client wrote.

    The Messages and Responses doors translate their requests into chat bodies; a feature the provider
    lacks is refused on the chat body (providers/features.py), so its field is renamed back here.
    """
    field, sep, rest = error.message.partition(": ")
    if not sep or field not in fields:
        return error
    return AppError(error.code, f"{fields[field]}: {rest}", status=error.status, headers=error.headers)

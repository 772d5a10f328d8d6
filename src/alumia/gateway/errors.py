"""Errors on the gateway, in OpenAI's error shape so that any OpenAI client reads them."""

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

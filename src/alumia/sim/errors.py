"""Error replies of the simulated providers, each in the shape its real provider sends.

`BAD_KEY` is the table the gateway's error parsing is tested against: one entry per provider with the
status, media type and body its real API answers a rejected key with (per its documentation). A few
providers answer a request that carries no key at all differently from one with a wrong key (xAI 401
instead of 400, Cerebras 403 `{"detail":"Not authenticated"}`, OpenAI's "You didn't provide an API
key", z.ai's business code 1001); those entries carry a separate `missing` reply.

Where a real provider quotes part of the key back, we do the same, masked the way it masks it, and
never more than a few characters: a simulator that echoed whole keys would hide exactly the leak the
gateway's tests are meant to catch.
"""

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A finished error answer: HTTP status, media type, the encoded body and any extra headers."""

    status: int
    media_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def error_response(error: ErrorReply) -> Response:
    """The HTTP response carrying `error`."""
    return Response(error.body, status_code=error.status, media_type=error.media_type,
                    headers=dict(error.headers) if error.headers else None)


BodyOf = Callable[[str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class BadKeyShape:
    """How one provider rejects a key: `body(key)` builds the body from the key it received."""

    status: int
    body: BodyOf
    media_type: str = JSON
    # The answer to a request without any key, where the provider documents a different one.
    missing_status: int | None = None
    missing_body: Callable[[], dict[str, Any]] | None = None


def mask(key: str, head: int, tail: int, stars: str = "****") -> str:
    """`key` with all but `head` leading and `tail` trailing characters hidden.

    Short keys are hidden entirely, so the visible parts can never add up to the whole key.
    """
    if len(key) < head + tail + 8:
        return stars
    return f"{key[:head]}{stars}{key[-tail:] if tail else ''}"


def _request_id() -> str:
    # Only error paths pay for this, so a real uuid is affordable.
    return str(uuid.uuid4())


def _openai(key: str) -> dict[str, Any]:
    return {"error": {
        "message": f"Incorrect API key provided: {mask(key, 5, 4)}. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key",
    }}


def _openai_missing() -> dict[str, Any]:
    return {"error": {
        "message": "You didn't provide an API key. You need to provide your API key in an Authorization "
                   "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API "
                   "key from https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error", "param": None, "code": None,
    }}


def _anthropic_request_id() -> str:
    return f"req_sim{uuid.uuid4().hex[:20]}"


def _anthropic(_key: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            "request_id": _anthropic_request_id()}


def _gemini(_key: str) -> dict[str, Any]:
    return {"error": {
        "code": 400, "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                     "domain": "googleapis.com",
                     "metadata": {"service": "generativelanguage.googleapis.com"}}],
    }}


def _deepseek(key: str) -> dict[str, Any]:
    return {"error": {
        "message": f"Authentication Fails, Your api key: {mask(key, 0, 4)} is invalid",
        "type": "authentication_error", "param": None, "code": "invalid_request_error",
    }}


def _xai(key: str) -> dict[str, Any]:
    # xAI's `error` is a plain string, not an object.
    return {"code": "Client specified an invalid argument",
            "error": f"Incorrect API key provided: {mask(key, 2, 4, '***')}. You can obtain an API key "
                     "from https://console.x.ai."}


def _xai_missing() -> dict[str, Any]:
    return {"code": "The caller does not have permission to execute the specified operation",
            "error": "No API key provided. Send it in the Authorization header as 'Bearer <key>'."}


def _mistral(_key: str) -> dict[str, Any]:
    return {"detail": "Unauthorized"}


def _minimax(_key: str) -> dict[str, Any]:
    # MiniMax reports failures in `base_resp`, its business status, not in an `error` object.
    return {"base_resp": {
        "status_code": 1004,
        "status_msg": "login fail: Please carry the API secret key in the 'Authorization' field of the "
                      "request header",
    }}


def _moonshot(_key: str) -> dict[str, Any]:
    return {"error": {"message": "Invalid Authentication", "type": "invalid_authentication_error"}}


def _zhipu(_key: str) -> dict[str, Any]:
    # z.ai sends its business code as a string; 1000-1004 are the authentication codes.
    return {"error": {"code": "1000", "message": "Authentication Failed"}}


def _zhipu_missing() -> dict[str, Any]:
    return {"error": {"code": "1001",
                      "message": "Authentication parameter not received in Header, unable to authenticate"}}


def _xiaomi(_key: str) -> dict[str, Any]:
    return {"error": {"message": "Invalid API Key", "type": "invalid_request_error", "param": None,
                      "code": "401"}}


def _nvidia(_key: str) -> dict[str, Any]:
    return {"type": "about:blank", "status": 401, "title": "Unauthorized", "detail": "Authentication failed"}


def _qwen(_key: str) -> dict[str, Any]:
    return {"error": {"message": "Incorrect API key provided. ", "type": "invalid_request_error",
                      "param": None, "code": "invalid_api_key"},
            "request_id": _request_id()}


def _cerebras(_key: str) -> dict[str, Any]:
    # Flat: Cerebras does not wrap its errors in `error`.
    return {"message": "Wrong API Key", "type": "invalid_request_error", "param": "api_key",
            "code": "wrong_api_key"}


def _cerebras_missing() -> dict[str, Any]:
    return {"detail": "Not authenticated"}


def _groq(_key: str) -> dict[str, Any]:
    return {"error": {"message": "Invalid API Key", "type": "invalid_request_error",
                      "code": "invalid_api_key"}}


BAD_KEY: Mapping[str, BadKeyShape] = {
    "anthropic": BadKeyShape(401, _anthropic),
    "openai": BadKeyShape(401, _openai, missing_status=401, missing_body=_openai_missing),
    "gemini": BadKeyShape(400, _gemini),
    "deepseek": BadKeyShape(401, _deepseek),
    "xai": BadKeyShape(400, _xai, missing_status=401, missing_body=_xai_missing),
    "mistral": BadKeyShape(401, _mistral),
    "minimax": BadKeyShape(401, _minimax),
    "moonshot": BadKeyShape(401, _moonshot),
    "zhipu": BadKeyShape(401, _zhipu, missing_status=401, missing_body=_zhipu_missing),
    "xiaomi": BadKeyShape(401, _xiaomi),
    "nvidia": BadKeyShape(401, _nvidia, media_type=PROBLEM_JSON),
    "qwen": BadKeyShape(401, _qwen),
    "cerebras": BadKeyShape(401, _cerebras, missing_status=403, missing_body=_cerebras_missing),
    "groq": BadKeyShape(401, _groq),
}


def bad_key_reply(provider: str, key: str | None) -> ErrorReply:
    """`provider`'s answer to a rejected key, or to no key at all when `key` is None."""
    shape = BAD_KEY[provider]
    if key is None and shape.missing_body is not None and shape.missing_status is not None:
        return ErrorReply(shape.missing_status, shape.media_type, orjson.dumps(shape.missing_body()))
    return ErrorReply(shape.status, shape.media_type, orjson.dumps(shape.body(key or "")))


def openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None,
                 error_type: str = "invalid_request_error") -> ErrorReply:
    """An error in OpenAI's envelope, used for request errors of every OpenAI-format provider.

    Real compatible providers word these differently; the simulator only needs them to be well-formed
    errors the gateway can relay, so one shape serves all.
    """
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return ErrorReply(status, JSON, orjson.dumps(body))


# Anthropic's `error.type` by status (as Anthropic documents it); unlisted: api_error from 500 up, else
# invalid_request_error.
ANTHROPIC_ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}


def anthropic_error(status: int, message: str, *, error_type: str | None = None,
                    headers: tuple[tuple[str, str], ...] = ()) -> ErrorReply:
    """An error in Anthropic's envelope, with its `request_id` also sent as the `request-id` header."""
    kind = error_type or ANTHROPIC_ERROR_TYPES.get(status) or (
        "api_error" if status >= 500 else "invalid_request_error")
    request_id = _anthropic_request_id()
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return ErrorReply(status, JSON, orjson.dumps(body), (("request-id", request_id), *headers))


# The google.rpc status names by HTTP status; unlisted: INTERNAL from 500 up, else INVALID_ARGUMENT.
GOOGLE_STATUSES: Mapping[int, str] = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 529: "UNAVAILABLE",
}


def google_error(status: int, message: str, *, rpc_status: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> ErrorReply:
    """An error in Google's RPC envelope, as the Gemini API sends it."""
    error: dict[str, Any] = {
        "code": status, "message": message,
        "status": rpc_status or GOOGLE_STATUSES.get(status) or ("INTERNAL" if status >= 500
                                                                else "INVALID_ARGUMENT"),
    }
    if details:
        error["details"] = details
    return ErrorReply(status, JSON, orjson.dumps({"error": error}))


GEMINI_RETRY_DELAY = "2s"
RETRY_AFTER_SECONDS = "1"


def _fault_message(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Overloaded" if status == 529 else "Error"
    return f"Simulated fault: {status} {phrase}."


def _openai_fault_type(status: int) -> tuple[str, str | None]:
    if status == 429:
        # What OpenAI itself sends for a request-rate limit.
        return "requests", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}.get(
        status, "invalid_request_error"), None


# zhipu/z.ai business codes a status fault carries in `error.code` (as z.ai documents them), with the
# message z.ai documents for each; any other status gets 1234, z.ai's generic "network error".
ZHIPU_FAULT_CODES: Mapping[int, tuple[str, str]] = {
    429: ("1302", "High concurrency usage of this API, please reduce concurrency or contact customer "
                  "service to increase limits"),
    402: ("1113", "Your account is in arrears, please recharge and try again"),
    404: ("1211", "Unknown Model, please check the model code"),
}
ZHIPU_OTHER_FAULT = ("1234", "Network error, please contact customer service")

# MiniMax base_resp status codes a status fault maps to; any other status gets 1024 (internal error).
MINIMAX_FAULT_CODES: Mapping[int, tuple[int, str]] = {
    429: (1002, "rate limit exceeded(RPM)"),
    401: (1004, "login fail: Please carry the API secret key in the 'Authorization' field of the "
                "request header"),
    402: (1008, "insufficient balance"),
    504: (1001, "request timeout"),
}
MINIMAX_OTHER_FAULT = (1024, "internal error")


def minimax_fault_body(status: int, model: str, completion_id: str, created: int) -> dict[str, Any]:
    """MiniMax's answer to a `[[sim:status=N]]` fault: sent in an HTTP **200**, as MiniMax does.

    The business status is in ``base_resp`` and there are no `choices`; the other fields are the ones
    MiniMax sends beside it (an empty usage, the sensitivity flags), as seen in live error chunks.
    """
    code, message = MINIMAX_FAULT_CODES.get(status, MINIMAX_OTHER_FAULT)
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "usage": {"total_tokens": 0, "total_characters": 0},
            "input_sensitive": False, "output_sensitive": False, "input_sensitive_type": 0,
            "output_sensitive_type": 0, "output_sensitive_int": 0,
            "base_resp": {"status_code": code, "status_msg": message}}


def fault_reply(wire_format: str, status: int, provider: str | None = None) -> ErrorReply:
    """The answer to a `[[sim:status=N]]` fault, in the error shape of `wire_format`.

    openai: ``{"error": {message, type, param, code}}``, type "requests" and code "rate_limit_exceeded"
    on 429 (what OpenAI sends), "server_error" from 500 up; ``retry-after: 1`` on 429.
    anthropic: ``{"type": "error", "error": {type, message}, "request_id"}`` with the type of
    `ANTHROPIC_ERROR_TYPES` (429 rate_limit_error, 529 overloaded_error, 503 api_error);
    ``retry-after: 1`` on 429.
    gemini: the Google RPC error with the status of `GOOGLE_STATUSES` (429 RESOURCE_EXHAUSTED, 503 and
    529 UNAVAILABLE, 500 INTERNAL); on 429 a ``google.rpc.RetryInfo`` detail with ``retryDelay`` "2s"
    and no ``retry-after`` header, as Gemini does.
    zhipu (`provider`, OpenAI format): the HTTP status with zhipu's own envelope
    ``{"error": {"code": <business code>, "message"}}``, the code from `ZHIPU_FAULT_CODES` (429
    "1302", 402 "1113", 404 "1211", else "1234"); ``retry-after: 1`` on 429 like the others.
    MiniMax's fault is not an HTTP error at all (`minimax_fault_body`); the format module answers it.
    """
    message = _fault_message(status)
    retry_after = (("retry-after", RETRY_AFTER_SECONDS),) if status == 429 else ()
    if wire_format == "anthropic":
        return anthropic_error(status, message, headers=retry_after)
    if wire_format == "gemini":
        details = ([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": GEMINI_RETRY_DELAY}]
                   if status == 429 else None)
        return google_error(status, message, details=details)
    if provider == "zhipu":
        business_code, zhipu_message = ZHIPU_FAULT_CODES.get(status, ZHIPU_OTHER_FAULT)
        body = {"error": {"code": business_code, "message": zhipu_message}}
        return ErrorReply(status, JSON, orjson.dumps(body), retry_after)
    error_type, code = _openai_fault_type(status)
    reply = openai_error(status, message, code=code, error_type=error_type)
    return ErrorReply(reply.status, reply.media_type, reply.body, retry_after)


# What a provider sends when it fails in the middle of a stream (`[[sim:stream_error_after=N]]`); the
# framing is the format modules'. See the "Mid-stream errors" table of `alumia.sim.faults`.
STREAM_ERROR_MESSAGE = "Simulated fault: the server had an error while streaming the response."
# Anthropic's documented mid-stream error event.
ANTHROPIC_STREAM_ERROR: Mapping[str, Any] = {
    "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
# Gemini's overloaded error, the one it sends when a stream fails part-way.
GEMINI_STREAM_ERROR: Mapping[str, Any] = {"error": {
    "code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}


def openai_stream_error_body(provider: str, model: str, completion_id: str, created: int) -> dict[str, Any]:
    """The payload of the ``data:`` event an OpenAI-format `provider` sends when it fails mid-stream.

    ``{"error": {message, type: "server_error", code: "server_error"}}``; zhipu's own envelope with its
    generic business code 1234; MiniMax's ``base_resp`` chunk (1024 internal error), as its status
    faults send it.
    """
    if provider == "minimax":
        return minimax_fault_body(500, model, completion_id, created)
    if provider == "zhipu":
        code, message = ZHIPU_OTHER_FAULT
        return {"error": {"code": code, "message": message}}
    return {"error": {"message": STREAM_ERROR_MESSAGE, "type": "server_error", "code": "server_error"}}

"""The documented error codes, raised by services and rendered by the API and the gateway."""

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every code an error can carry, each with the HTTP status it maps to unless the raiser says
    otherwise (an upstream error keeps the status that fits what the provider said).

    A code cannot be added without its status: the status is part of the member.
    """

    status: int

    def __new__(cls, value: str, status: int) -> "ErrorCode":
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        return member

    BAD_REQUEST = ("BAD_REQUEST", 400)
    UNAUTHORIZED = ("UNAUTHORIZED", 401)
    PAYMENT_REQUIRED = ("PAYMENT_REQUIRED", 402)
    FORBIDDEN = ("FORBIDDEN", 403)
    NOT_FOUND = ("NOT_FOUND", 404)
    METHOD_NOT_ALLOWED = ("METHOD_NOT_ALLOWED", 405)
    REQUEST_TIMEOUT = ("REQUEST_TIMEOUT", 408)
    CONFLICT = ("CONFLICT", 409)
    PAYLOAD_TOO_LARGE = ("PAYLOAD_TOO_LARGE", 413)
    VALIDATION_ERROR = ("VALIDATION_ERROR", 422)
    TOO_MANY_REQUESTS = ("TOO_MANY_REQUESTS", 429)
    BAD_GATEWAY = ("BAD_GATEWAY", 502)
    SERVICE_UNAVAILABLE = ("SERVICE_UNAVAILABLE", 503)
    GATEWAY_TIMEOUT = ("GATEWAY_TIMEOUT", 504)
    # Keys: the org's BYOK key refused by its provider (422 when added, the provider's status on a
    # call), one that can no longer be decrypted, an API key used where its scope does not reach.
    BYOK_KEY_REJECTED = ("BYOK_KEY_REJECTED", 422)
    BYOK_KEY_UNAVAILABLE = ("BYOK_KEY_UNAVAILABLE", 409)
    KEY_NOT_ALLOWED = ("KEY_NOT_ALLOWED", 422)
    # A provider's own failure, passed on (services/proxy.py `upstream_failure`).
    PROVIDER_BILLING_ERROR = ("PROVIDER_BILLING_ERROR", 402)
    UPSTREAM_AUTH_FAILED = ("UPSTREAM_AUTH_FAILED", 502)
    UPSTREAM_BAD_REQUEST = ("UPSTREAM_BAD_REQUEST", 400)
    UPSTREAM_NOT_FOUND = ("UPSTREAM_NOT_FOUND", 404)
    UPSTREAM_OVERLOADED = ("UPSTREAM_OVERLOADED", 503)
    UPSTREAM_ERROR = ("UPSTREAM_ERROR", 502)


class AppError(Exception):
    """An error a caller should see: a documented code, a message, and the HTTP status it maps to.

    Messages are written for people and never carry secrets or echo request bodies.
    """

    def __init__(self, code: ErrorCode, message: str, *, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or code.status
        self.headers = headers or {}

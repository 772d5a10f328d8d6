"""Request bodies and concurrency, bounded for every route: one pure ASGI middleware.

A request body is never read here. The handler's `receive` is wrapped instead, so that the handler
authenticates first and the limits apply only when it asks for the body:

* a `Content-Length` over the route's limit fails the first read with PAYLOAD_TOO_LARGE (413), before
  a byte of the body is read (and before uvicorn sends `100 Continue`);
* a body without a length (chunked) fails as soon as the bytes received pass the limit;
* the whole body must arrive within the read timeout of the first read, or the read fails with
  REQUEST_TIMEOUT (408): a client that sends a byte now and then cannot hold a request open.

The failures are `AppError`s raised from `receive`, so each handler renders them in its own envelope.
A response that starts before the request's body was all received carries `Connection: close`: the
server then drops the connection (after a short linger, so that the client reads the answer) instead of
reading, or waiting for, the rest of the body.

Past `max_concurrent` requests in flight in this process, a request is answered 503 at once, with
`Retry-After: 1`, by `reject`; a streamed answer holds its slot until its last byte.
"""

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alumia.errors import AppError, ErrorCode

Reject = Callable[[Scope, AppError], Response]
LINGER_SECONDS = 2.0  # how long a refused body is read and dropped before the connection closes


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The largest body, in bytes, each kind of route accepts, and the time a whole body may take."""

    gateway: int  # /v1/...
    api: int  # /api/...
    webhook: int  # /api/v1/billing/webhooks/...: read before anyone is known (the signature needs it)
    page: int  # the dashboard's forms and the lab
    login: int  # /login: read before anyone is known
    read_timeout_seconds: float

    def for_path(self, path: str) -> int:
        """The body limit of the route at `path`."""
        if path == "/v1" or path.startswith("/v1/"):
            return self.gateway
        if path.startswith("/api/v1/billing/webhooks/"):
            return self.webhook
        if path.startswith("/api/"):
            return self.api
        if path == "/login":
            return self.login
        return self.page


def _declared_length(headers: Headers) -> int | None:
    """The request's Content-Length, or None without one (the HTTP parser has rejected bad ones)."""
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


class _BoundedBody:
    """One request's `receive` and `send`, with its body's limit and deadline."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int, timeout: float) -> None:
        headers = Headers(scope=scope)
        self._receive, self._send = receive, send
        self._limit, self._timeout = limit, timeout
        self._declared = _declared_length(headers)
        self._received = 0
        self._deadline: float | None = None
        self._refused: ErrorCode | None = None  # the error code, repeated on any later read
        self._closing = False  # the answer began before the whole body came in
        # A request without a length and without Transfer-Encoding has no body (RFC 9112 §6.3).
        self._complete = self._declared == 0 or (self._declared is None
                                                  and "transfer-encoding" not in headers)

    async def receive(self) -> Message:
        """The next message, or an AppError once the body is over its limit or late."""
        if self._complete:  # the body is in; what follows (a disconnect) passes through
            return await self._receive()
        if self._refused is not None:
            raise self._refuse(self._refused)
        if self._declared is not None and self._declared > self._limit:
            raise self._refuse(ErrorCode.PAYLOAD_TOO_LARGE)
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._timeout
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            raise self._refuse(ErrorCode.REQUEST_TIMEOUT) from None
        if message["type"] != "http.request":  # the client went away
            self._complete = True
            return message
        self._received += len(message.get("body", b""))
        if self._received > self._limit:
            raise self._refuse(ErrorCode.PAYLOAD_TOO_LARGE)
        self._complete = not message.get("more_body", False)
        return message

    def _refuse(self, code: ErrorCode) -> AppError:
        self._refused = code
        if code is ErrorCode.PAYLOAD_TOO_LARGE:
            return AppError(code, f"request body is over {self._limit} bytes")
        return AppError(code, f"the request body did not arrive within {self._timeout:g} seconds")

    async def send(self, message: Message) -> None:
        """Pass the message on; an answer begun before the whole body came in closes the connection."""
        if message["type"] == "http.response.start" and not self._complete:
            self._closing = True
            headers = [(name, value) for name, value in message.get("headers", [])
                       if name.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        elif self._closing and message["type"] == "http.response.body" and not message.get("more_body"):
            # The answer goes out whole, then the connection lingers before the server closes it.
            await self._send({**message, "more_body": True})
            await self._linger()
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await self._send(message)

    async def _linger(self) -> None:
        """Read and drop what the client is still sending, for a moment, so that the answer reaches it.

        Closing a socket with unread data makes the kernel send a reset, and a reset can make the
        client's kernel drop the answer before the client reads it: a client that sent a large body
        at once would see "connection reset" instead of the 413 (HTTP servers' "lingering close").
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                while True:
                    message = await self._receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return


class HttpLimits:
    """The ASGI middleware: body limits and deadline per request, and the process's concurrency cap."""

    def __init__(self, app: ASGIApp, *, limits: BodyLimits, max_concurrent: int, reject: Reject) -> None:
        self.app = app
        self.limits = limits
        self.max_concurrent = max_concurrent
        self.reject = reject
        self.in_flight = 0  # one event loop per process: a plain counter is exact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _BoundedBody(scope, receive, send, self.limits.for_path(scope["path"]),
                            self.limits.read_timeout_seconds)
        if self.in_flight >= self.max_concurrent:
            busy = AppError(ErrorCode.SERVICE_UNAVAILABLE,
                            "the server is at its limit of concurrent requests; retry",
                            headers={"Retry-After": "1"})
            await self.reject(scope, busy)(scope, body.receive, body.send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, body.receive, body.send)
        finally:
            self.in_flight -= 1

"""The narrow interface every wire-format adapter implements, and the upstream error type.

Adapters only translate: they receive the key on each call and never keep it, and they neither
price, route nor store anything.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from alumia.domain.usage import TokenUsage


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """An HTTP request ready to send to a provider."""

    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a client's OpenAI chat request the gateway needs, parsed once."""

    raw: bytes
    body: dict
    model: str
    stream: bool
    include_usage: bool
    max_output_tokens: int | None


class UpstreamError(Exception):
    """A provider answered with an error; message is already free of key material."""

    def __init__(self, *, provider: str, status: int, message: str, code: str | None = None,
                 retry_after: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


class StreamTranslator(Protocol):
    """Turns a provider's stream, one SSE data payload at a time, into OpenAI chunk frames."""

    usage: TokenUsage | None
    finished: bool

    def feed(self, payload: bytes) -> list[bytes]:
        """Frames (complete `data: ...\\n\\n` byte strings) to send the client for one upstream payload."""
        ...


class Adapter(Protocol):
    """One wire format."""

    def build(self, base_url: str, request: ChatRequest, key: str) -> UpstreamRequest:
        """The upstream request for a client's chat request, authenticated with `key`."""
        ...

    def parse_response(self, body: bytes) -> tuple[bytes, TokenUsage]:
        """The OpenAI-shaped body to return and the usage it reports."""
        ...

    def stream_translator(self, request: ChatRequest) -> StreamTranslator:
        """A translator for one streamed response."""
        ...

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """An upstream error response as an UpstreamError."""
        ...

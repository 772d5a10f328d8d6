"""The narrow interface every wire-format adapter implements, and the upstream error type.

Adapters only translate: they receive the key on each call and never keep it, and they neither
price, route nor store anything.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from alumia.domain.usage import TokenUsage


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """An HTTP request ready to send to a provider (GET when it has no body)."""

    url: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a client's OpenAI chat request the gateway needs, parsed once."""

    raw: bytes
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    max_output_tokens: int | None
    choices: int = 1  # `n`: how many completions the client asked for; each is held and billed


def has_counts(usage: Any, *names: str) -> TypeGuard[Mapping[str, Any]]:
    """Whether `usage` is an object holding every named count as a non-negative integer."""
    return isinstance(usage, Mapping) and all(
        isinstance(usage.get(name), int) and not isinstance(usage.get(name), bool) and usage[name] >= 0
        for name in names)


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
    """Turns a provider's stream, one SSE `data:` payload at a time, into OpenAI chunk frames.

    Frames are complete `data: {...}\n\n` byte strings in OpenAI's chat.completion.chunk shape.
    The gateway writes `data: [DONE]` itself after `close()` when `finished` is true.
    """

    usage: TokenUsage | None
    finished: bool  # the provider signalled a proper end (OpenAI [DONE], message_stop, a finishReason)

    def feed(self, payload: bytes) -> list[bytes]:
        """Frames for the client for one upstream `data:` payload (the bytes after `data:`, stripped)."""
        ...

    def close(self) -> list[bytes]:
        """Frames to send once the upstream stream has ended (e.g. a usage chunk held back until then)."""
        ...


class Adapter(Protocol):
    """One wire format: translate the client's OpenAI request out, and the provider's answer back."""

    def build(self, base_url: str, request: ChatRequest, key: str, max_output_tokens: int) -> UpstreamRequest:
        """The upstream request for a client's chat request, authenticated with `key`.

        `max_output_tokens` is the client's limit or, when it set none, the model's; formats that
        require a limit (Anthropic's max_tokens) use it.
        """
        ...

    def parse_response(self, body: bytes, request: ChatRequest) -> tuple[bytes, TokenUsage | None]:
        """The OpenAI chat.completion body to return and the usage the provider reported.

        The usage is None when the provider reported no complete usage (none at all, or without one
        of the two counts its format always has); the gateway then estimates it. The body then has
        no `usage` unless the provider's own body carried one (OpenAI-format bodies pass through).
        """
        ...

    def stream_translator(self, request: ChatRequest) -> StreamTranslator:
        """A translator for one streamed response."""
        ...

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """An upstream error response as an UpstreamError."""
        ...

    def key_check(self, base_url: str, key: str) -> UpstreamRequest:
        """The cheapest request that tells whether a key works (per the provider's documentation)."""
        ...


def retry_after(headers: Mapping[str, str]) -> str | None:
    """Seconds to wait, from retry-after-ms (rounded up) or retry-after, as the SDKs read them."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return str(max(1, math.ceil(float(ms) / 1000)))
        except ValueError:
            pass
    return headers.get("retry-after")

"""The OpenAI chat-completions wire format, spoken by twelve of the fourteen providers."""

from collections.abc import Mapping

import orjson

from alumia.domain.usage import TokenUsage
from alumia.providers.base import ChatRequest, UpstreamError, UpstreamRequest
from alumia.providers.errors import error_message

DONE_FRAME = b"data: [DONE]\n\n"


def usage_from_openai(usage: Mapping | None) -> TokenUsage | None:
    """OpenAI usage in our terms: cached and cache-write tokens are inside prompt_tokens, so subtract."""
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    cache_write = int(details.get("cache_write_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return TokenUsage(
        input_tokens=max(0, prompt - cached - cache_write),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


class OpenAIStreamTranslator:
    """Passes chunks through untouched, reading the usage chunk on the way.

    Only payloads that mention usage are parsed. The usage reaches the client only if it asked for
    it (stream_options.include_usage); the gateway always asks upstream, to meter the call.
    """

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.usage: TokenUsage | None = None
        self.finished = False

    def feed(self, payload: bytes) -> list[bytes]:
        """Frames for the client for one upstream `data:` payload."""
        if payload == b"[DONE]":
            self.finished = True
            return []
        if b'"usage"' not in payload:
            return [b"data: " + payload + b"\n\n"]
        chunk = orjson.loads(payload)
        usage = chunk.get("usage")
        if usage is None:
            return [b"data: " + payload + b"\n\n"]
        self.usage = usage_from_openai(usage)
        if self.include_usage:
            return [b"data: " + payload + b"\n\n"]
        if not chunk.get("choices"):
            return []
        chunk["usage"] = None
        return [b"data: " + orjson.dumps(chunk) + b"\n\n"]

    def close(self) -> list[bytes]:
        """Nothing is held back: every chunk went through as it came."""
        return []


class OpenAICompatAdapter:
    """Sends the client's request on almost untouched; reads usage from the answer."""

    def build(self, base_url: str, request: ChatRequest, key: str, max_output_tokens: int) -> UpstreamRequest:
        """POST {base}/chat/completions with Bearer auth; streams always ask for usage."""
        body = request.raw
        if request.stream and not request.include_usage:
            patched = dict(request.body)
            patched["stream_options"] = {**(patched.get("stream_options") or {}), "include_usage": True}
            body = orjson.dumps(patched)
        return UpstreamRequest(
            url=f"{base_url}/chat/completions",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            body=body,
        )

    def parse_response(self, body: bytes, request: ChatRequest) -> tuple[bytes, TokenUsage]:
        """The body is returned as the provider sent it; only its usage is read."""
        usage = usage_from_openai(orjson.loads(body).get("usage"))
        return body, usage or TokenUsage()

    def stream_translator(self, request: ChatRequest) -> OpenAIStreamTranslator:
        """A pass-through translator."""
        return OpenAIStreamTranslator(include_usage=request.include_usage)

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """Read the message out of any of the providers' error shapes."""
        message, code = error_message(body)
        return UpstreamError(provider=provider, status=status, message=message, code=code,
                             retry_after=headers.get("retry-after"))


"""OpenAI's chat-completions wire shape, which is also the gateway's own: its SSE frames, the in-stream
error frame, and usage read from it and written in it.

Every adapter translates between its provider's format and this shape, and the relays and front doors
read and write it; they import it from here, not from the OpenAI-format adapter (openai_compat.py),
which keeps only what the OpenAI-format providers do differently.
"""

from collections.abc import Mapping
from typing import Any

from alumia.domain.usage import TokenUsage
from alumia.sse import data_frame

DONE_FRAME = b"data: [DONE]\n\n"


def error_frame(message: str, code: str | None, *, kind: str = "api_error") -> bytes:
    """An in-band error, as OpenAI sends one after a stream has started (`kind` is its `type`)."""
    return data_frame({"error": {"message": message, "type": kind, "param": None, "code": code}})


def usage_from_openai(usage: Mapping[str, Any] | None, provider: str = "openai") -> TokenUsage | None:
    """OpenAI-shaped usage in our terms: cached and cache-write tokens are inside prompt_tokens."""
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or usage.get("cached_tokens")
                 or usage.get("prompt_cache_hit_tokens") or 0)
    cache_write = int(details.get("cache_write_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    if provider == "xai":
        completion += reasoning  # xAI bills reasoning as output but leaves it out of completion_tokens
    return TokenUsage(
        input_tokens=max(0, prompt - cached - cache_write),
        output_tokens=completion,
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


def openai_usage(usage: TokenUsage) -> dict[str, Any]:
    """Our usage in OpenAI's shape: prompt_tokens includes cache reads and writes, as OpenAI's does."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens,
                                  "cache_write_tokens": usage.cache_write_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }

"""Token usage of one model call, in the gateway's own terms."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts, each priced once.

    input_tokens excludes cache reads and cache writes (OpenAI's prompt_tokens includes them; the
    adapters subtract). output_tokens includes reasoning tokens; reasoning_tokens is informational.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """All input tokens, as OpenAI counts prompt_tokens."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

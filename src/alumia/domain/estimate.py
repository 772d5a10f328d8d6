"""Estimating tokens when a provider reports none (a cut stream): from the text actually delivered.

Rule: a text is ceil(UTF-8 bytes / 4) tokens (about four bytes a token for English under BPE
tokenizers); each input message adds 4 tokens of framing, as OpenAI's chat format does. Input is
estimated from the text of the request's messages (string content, or the text of text parts).
Reported counts are kept where the provider gave them and only raised, never lowered, by the estimate.

An embedding input is estimated the same way: a text is ceil(UTF-8 bytes / 4) tokens with no
framing, and an input given as token ids is exactly that many tokens (Gemini reports no usage for
embeddings, docs/providers.md "Embeddings").

Deciding whether a stream has reached its hold needs the opposite error: a count that is rarely above
the real one, so an honest answer is never cut short. There a token is taken to be at most
`FEWEST_BYTES_PER_TOKEN` bytes (ordinary text averages under five bytes a token in common BPE
vocabularies; CJK text is one to three bytes a token).
"""

import math
from typing import Any

from alumia.domain.usage import TokenUsage

PER_MESSAGE_TOKENS = 4
BYTES_PER_TOKEN = 4
FEWEST_BYTES_PER_TOKEN = 6


def byte_tokens(utf8_bytes: int, bytes_per_token: int = BYTES_PER_TOKEN) -> int:
    """Estimated tokens of a text of this many UTF-8 bytes."""
    return math.ceil(utf8_bytes / bytes_per_token)


def text_tokens(text: str) -> int:
    """Estimated tokens of a text."""
    return byte_tokens(len(text.encode("utf-8")))


def _message_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Only string texts count: a part's text can be anything a client sent (null, a list, a number).
        return " ".join(p["text"] for p in content
                        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
    return ""


def estimate_input(messages: list[Any]) -> int:
    """Estimated prompt tokens of an OpenAI messages list."""
    return sum(PER_MESSAGE_TOKENS + text_tokens(_message_text(m.get("content")))
               for m in messages if isinstance(m, dict))


def estimate_embedding_input(inputs: list[str] | list[list[int]]) -> int:
    """Estimated input tokens of an embeddings request's inputs (texts, or arrays of token ids)."""
    return sum(text_tokens(item) if isinstance(item, str) else len(item) for item in inputs)


def estimate_usage(delivered_bytes: int, reported: TokenUsage | None, *, input_tokens: int,
                   bytes_per_token: int = BYTES_PER_TOKEN) -> TokenUsage:
    """Usage for a call whose provider reported none or only part: estimates fill what is missing.

    `input_tokens` is `estimate_input` of the request's messages, worked out once per call by the
    caller (a stream asks on every frame, and the messages can be many); `delivered_bytes` is the
    UTF-8 length of the text the client was sent (content, reasoning and tool-call arguments);
    `bytes_per_token` is FEWEST_BYTES_PER_TOKEN for the hold's ceiling.
    """
    output = byte_tokens(delivered_bytes, bytes_per_token)
    if reported is None:
        return TokenUsage(input_tokens=input_tokens, output_tokens=output)
    return TokenUsage(input_tokens=reported.input_tokens, output_tokens=max(reported.output_tokens, output),
                      cache_read_tokens=reported.cache_read_tokens,
                      cache_write_tokens=reported.cache_write_tokens,
                      reasoning_tokens=reported.reasoning_tokens)

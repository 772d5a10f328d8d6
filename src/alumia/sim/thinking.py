"""The simulator's thinking: deterministic text, a signature Claude-style formats can check, and
where a request put its `cache_control` marks.

Thinking text: ``"Simulated thinking by {provider}/{model}:"`` followed by the words of the last user
message (as the reply echoes them, `alumia.sim.openai_format.reply_words`), cut to the budget when
there is one. Its tokens are its words, and they are output tokens.

Signature: ``"sim-sig-" + sha256(thinking text)``, so a thinking block sent back on a later turn can
be checked, as Anthropic checks its own: a block whose signature is not its text's is refused.
"""

import hashlib
from collections.abc import Sequence
from typing import Any

from alumia.sim.openai_format import MAX_ECHO_WORDS, text_of

THINKING_PREFIX = "Simulated thinking by"
SIGNATURE_PREFIX = "sim-sig-"


def thinking_words(provider: str, model: str, messages: Sequence[dict[str, Any]],
                   budget: int | None) -> list[str]:
    """The thinking, as words, cut to `budget` words when it is a positive number."""
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    echoed = text_of(last_user.get("content")).split()[:MAX_ECHO_WORDS] if last_user else []
    words = f"{THINKING_PREFIX} {provider}/{model}:".split() + echoed
    return words[:budget] if budget is not None and budget > 0 else words


def signature(text: str) -> str:
    """The signature the simulator gives a thinking text."""
    return SIGNATURE_PREFIX + hashlib.sha256(text.encode()).hexdigest()


def cache_marks(body: dict[str, Any]) -> dict[str, Any]:
    """Every `cache_control` of a Messages body by where it stands (``system.0``,
    ``messages.1.content.0``, ``messages.1.content.0.content.0`` inside a tool result, ``tools.0``)."""
    marks: dict[str, Any] = {}

    def visit(blocks: object, where: str) -> None:
        for i, block in enumerate(blocks if isinstance(blocks, list) else ()):
            if not isinstance(block, dict):
                continue
            if "cache_control" in block:
                marks[f"{where}.{i}"] = block["cache_control"]
            visit(block.get("content"), f"{where}.{i}.content")

    visit(body.get("system"), "system")
    for i, message in enumerate(body.get("messages") or ()):
        if isinstance(message, dict):
            visit(message.get("content"), f"messages.{i}.content")
    visit(body.get("tools"), "tools")
    return marks

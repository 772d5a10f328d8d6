"""Scrubbing key-shaped text: the second line of defence behind never handling keys in text at all."""

import logging
import re

# Provider key shapes (shared/providers.md §1) and our own alm_ keys; deliberately broad.
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|xai-[0-9A-Za-z_\-]{16,}|nvapi-[\w\-]{16,}"
    r"|gsk_[A-Za-z0-9]{16,}|csk-[a-z0-9]{16,}|tp-[A-Za-z0-9_\-]{16,}|alm_(?:live|test)_[0-9a-f]{16,}"
    r"|[0-9a-f]{32}\.[A-Za-z0-9]{8,})"
)
REDACTED = "[redacted]"


def looks_like_key(text: str) -> bool:
    """Whether a text contains something shaped like a provider or Alumia key."""
    return _KEY_SHAPES.search(text) is not None


def redact(text: str, *secrets: str) -> str:
    """`text` with the given secrets and anything shaped like a provider or Alumia key replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites every log record's message with key shapes redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, redact it, and drop the args."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True

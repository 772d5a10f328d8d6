"""The one way a provider key is shown: a short prefix and, for long keys, the last 4 characters."""

from __future__ import annotations

_LONG_KEY = 20
_LONG_PREFIX = 7
_LONG_SUFFIX = 4
_SHORT_PREFIX = 3
ELLIPSIS = "…"


def mask_key(key: str) -> str:
    """Mask a provider key for display, after stripping surrounding whitespace.

    Keys of 20 or more characters show their first 7 and last 4 characters ("sk-ant-…AbCd");
    shorter keys show only their first 3 ("abc…"). So at most 11 characters of the key are
    revealed, and for keys under 20 characters at most 3.
    """
    stripped = key.strip()
    if len(stripped) >= _LONG_KEY:
        return f"{stripped[:_LONG_PREFIX]}{ELLIPSIS}{stripped[-_LONG_SUFFIX:]}"
    return f"{stripped[:_SHORT_PREFIX]}{ELLIPSIS}"

"""Scrubbing key material from provider text: the one redaction step every upstream text passes through.

Two rules for the key in use (`KeyRedactor`), then a second line of defence for anything key-shaped:
- the key as sent, its percent-encoded forms (quote, quote_plus; either hex case) and its JSON-escaped
  form, in any letter case, are replaced by `[redacted]`;
- a text that still holds a fragment of FRAGMENT_CHARS or more characters of one of those forms,
  forwards or reversed, in any letter case, is withheld as a whole (`WITHHELD`): a key echoed in
  pieces, reversed or half-masked cannot be cut out reliably, and the text around it is not worth
  the risk.
Streams pass every frame through `KeyRedactor.frame`, whose fast path is a few C-level `in` checks.
"""

import logging
import re
from collections import OrderedDict
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

import orjson

# Provider key shapes (as each provider documents them) and our own alm_ keys; deliberately broad.
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|xai-[0-9A-Za-z_\-]{16,}|nvapi-[\w\-]{16,}"
    r"|gsk_[A-Za-z0-9]{16,}|csk-[a-z0-9]{16,}|tp-[A-Za-z0-9_\-]{16,}|alm_(?:live|test)_[0-9a-f]{16,}"
    r"|[0-9a-f]{32}\.[A-Za-z0-9]{8,})"
)
REDACTED = "[redacted]"
WITHHELD = "the provider's message was withheld because it contained part of the key"
FRAGMENT_CHARS = 12
# Any run of 2 * _CHUNK - 1 <= FRAGMENT_CHARS characters of a form contains one of its aligned
# _CHUNK-character chunks, so looking for those chunks finds every fragment the rules act on.
_CHUNK = (FRAGMENT_CHARS + 1) // 2
# JSON escapes that could spell key characters without the characters themselves.
_ESCAPES = ("\\u", "\\/")


class KeyInAnswer(Exception):
    """A streamed answer chunk carried part of the key: it cannot go out, and the stream must end."""


def looks_like_key(text: str) -> bool:
    """Whether a text contains something shaped like a provider or Alumia key."""
    return _KEY_SHAPES.search(text) is not None


def _forms(key: str) -> list[str]:
    """The key as a provider might echo it: as sent, percent-encoded, JSON-escaped; longest first."""
    forms = {key, quote(key), quote(key, safe=""), quote_plus(key), orjson.dumps(key).decode()[1:-1]}
    return sorted(forms, key=len, reverse=True)


def _chunks(text: str, size: int) -> Iterable[str]:
    if len(text) < size:
        yield text
        return
    for start in range(0, len(text) - size + 1, size):
        yield text[start:start + size]


class KeyRedactor:
    """Redaction for one call, knowing the key in use; build it once per call, use it on every text."""

    def __init__(self, key: str) -> None:
        forms = [form.lower() for form in _forms(key)] if key else []
        self._exact = (re.compile("|".join(re.escape(form) for form in forms), re.IGNORECASE)
                       if forms else None)
        runs = [*forms, *(form[::-1] for form in forms)]
        # Every FRAGMENT_CHARS-long run of a form: a longer fragment contains one of them.
        self._fragments = frozenset(run[i:i + FRAGMENT_CHARS] for run in runs
                                    for i in range(len(run) - FRAGMENT_CHARS + 1))
        # What a frame must contain for the slow path to run: aligned chunks of every (lower-cased)
        # form and its reverse, or the whole form where it is shorter than a fragment.
        needles = {chunk for run in runs for chunk in
                   (_chunks(run, _CHUNK) if len(run) >= FRAGMENT_CHARS else (run,))}
        # With error frames and JSON escapes: what sends a frame down the slow path. (`in` on str is
        # measurably cheaper than on bytes, whose every check goes through the buffer protocol.)
        self._needles = tuple(needle for needle in needles if needle)
        self._frame_needles = (*self._needles, *_ESCAPES, '"error"')

    def _key_rule(self, text: str) -> tuple[str, bool]:
        """`text` with the key's whole forms replaced, and whether a fragment left it withheld."""
        lowered = text.lower()
        if not any(needle in lowered for needle in self._needles):
            return text, False
        if self._exact is not None:
            text = self._exact.sub(REDACTED, text)
        lowered = text.lower()
        if any(fragment in lowered for fragment in self._fragments):
            return WITHHELD, True
        return text, False

    def text(self, text: str) -> str:
        """A provider's text (an error message) fit to show or log: the key rules, then key shapes."""
        return _KEY_SHAPES.sub(REDACTED, self._key_rule(text)[0])

    def frame(self, frame: bytes) -> bytes:
        """One outgoing SSE frame (`data: ...\\n\\n`) with the key rules applied to every text in it.

        An error frame's texts are also cleared of key shapes, and a text with a fragment of the key
        is withheld. An answer chunk (content, reasoning, tool calls) with a fragment raises
        KeyInAnswer: part of an answer cannot be withheld without the client misreading the rest.
        """
        lowered = frame.decode("utf-8", "replace").lower()
        if not any(needle in lowered for needle in self._frame_needles):
            return frame
        body = frame.removeprefix(b"data: ").removesuffix(b"\n\n")
        cleaned = self._json(body)
        return frame if cleaned is body else b"data: " + cleaned + b"\n\n"

    def answer(self, body: bytes) -> bytes:
        """A whole non-streamed answer (JSON) with the key rules applied to every text in it, as `frame`."""
        lowered = body.decode("utf-8", "replace").lower()
        if not any(needle in lowered for needle in self._frame_needles):
            return body
        return self._json(body)

    def _json(self, body: bytes) -> bytes:
        """`body` itself when nothing in it needs redacting, else the redacted bytes; KeyInAnswer as above."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:  # not JSON: what it is cannot be told, so it is not an error
            text = body.decode("utf-8", "replace")
            cleaned, was_withheld = self._key_rule(text)
            if was_withheld:
                raise KeyInAnswer from None
            return body if cleaned == text else cleaned.encode()
        is_error = isinstance(data, dict) and "error" in data
        withheld: list[bool] = []
        cleaned_data = self._walk(data, is_error, withheld)
        if withheld and not is_error:
            raise KeyInAnswer
        return body if cleaned_data == data else orjson.dumps(cleaned_data)

    def _walk(self, value: object, shapes: bool, withheld: list[bool]) -> object:
        if isinstance(value, str):
            cleaned, was_withheld = self._key_rule(value)
            if was_withheld:
                withheld.append(True)
            return _KEY_SHAPES.sub(REDACTED, cleaned) if shapes else cleaned
        if isinstance(value, dict):
            return {self._walk(name, shapes, withheld): self._walk(item, shapes, withheld)
                    for name, item in value.items()}
        if isinstance(value, list):
            return [self._walk(item, shapes, withheld) for item in value]
        return value


class Redactors:
    """The KeyRedactor of each key in use, built once per key and kept: building one costs more than
    redacting a whole answer with it. Bounded (least recently used goes); one per app."""

    def __init__(self, size: int = 256) -> None:
        self._built: OrderedDict[str, KeyRedactor] = OrderedDict()
        self._size = size

    def for_key(self, key: str) -> KeyRedactor:
        """The redactor for `key`, built on first use."""
        redactor = self._built.get(key)
        if redactor is not None:
            self._built.move_to_end(key)
            return redactor
        redactor = self._built[key] = KeyRedactor(key)
        if len(self._built) > self._size:
            self._built.popitem(last=False)
        return redactor

    def __repr__(self) -> str:  # never the keys
        return f"Redactors(kept={len(self._built)})"


def redact(text: str, *secrets: str) -> str:
    """`text` with the given secrets (as `KeyRedactor` finds them) and anything key-shaped redacted."""
    for secret in secrets:
        text = KeyRedactor(secret).text(text)
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

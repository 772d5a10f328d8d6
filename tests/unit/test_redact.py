"""The one redaction step that knows the key in use."""

import string
from urllib.parse import quote, quote_plus

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alumia.redact import FRAGMENT_CHARS, REDACTED, WITHHELD, KeyInAnswer, KeyRedactor, Redactors, redact

# Provider keys are printable ASCII without spaces (docs/behaviour.md "BYOK keys"); these add the
# characters that percent-encoding and JSON escaping change.
KEY_CHARS = string.ascii_letters + string.digits + "-_./+=~:"
keys = st.text(KEY_CHARS, min_size=20, max_size=80)
# Ordinary provider prose: no letter of any key alphabet in runs long enough to matter, and no digits.
prose = st.text(" ,;!?()'\n" + "aeiouy", max_size=200)
SETTINGS = settings(max_examples=150, derandomize=True, deadline=None)


def echoes(key: str) -> list[str]:
    """Every way a provider was seen to echo a key, whole."""
    return [key, quote(key), quote(key, safe=""), quote_plus(key), quote(key, safe="").lower(),
            quote_plus(key).lower(), key.upper(), key.lower(), key.swapcase(), key[::-1]]


def fragments(key: str) -> list[str]:
    """Every run of FRAGMENT_CHARS characters of the key, forwards and reversed."""
    runs = [key[i:i + FRAGMENT_CHARS] for i in range(len(key) - FRAGMENT_CHARS + 1)]
    return [*runs, *(run[::-1] for run in runs)]


def leaks(key: str, text: str) -> list[str]:
    """What of the key a text still shows: any echo, or any fragment in any letter case."""
    lowered = text.lower()
    return [needle for needle in [*echoes(key), *fragments(key)] if needle.lower() in lowered]


@SETTINGS
@given(key=keys, before=prose, after=prose, which=st.integers(0, 9))
def test_no_echo_of_the_key_survives(key: str, before: str, after: str, which: int) -> None:
    echo = echoes(key)[which]
    cleaned = KeyRedactor(key).text(f"{before}invalid key {echo} given{after}")
    assert leaks(key, cleaned) == []
    assert redact(f"{before}{echo}{after}", key) == KeyRedactor(key).text(f"{before}{echo}{after}")


@SETTINGS
@given(key=keys, before=prose, after=prose, start=st.integers(0, 80), length=st.integers(FRAGMENT_CHARS, 80),
       reverse=st.booleans(), upper=st.booleans())
def test_a_text_with_a_fragment_of_the_key_is_withheld(key: str, before: str, after: str, start: int,
                                                        length: int, reverse: bool, upper: bool) -> None:
    start = start % (len(key) - FRAGMENT_CHARS + 1)
    fragment = key[start:start + min(length, len(key) - 1)]  # the whole key is redacted in place instead
    fragment = fragment[::-1] if reverse else fragment
    fragment = fragment.upper() if upper else fragment
    assert KeyRedactor(key).text(f"{before}key {fragment}, check it{after}") == WITHHELD


@SETTINGS
@given(key=st.text(KEY_CHARS, min_size=2 * FRAGMENT_CHARS, max_size=80))
def test_a_key_split_in_pieces_of_a_fragment_or_more_is_withheld(key: str) -> None:
    half = len(key) // 2
    assert KeyRedactor(key).text(f"the key {key[:half]} ... {key[half:]} was refused") == WITHHELD


@SETTINGS
@given(key=keys, text=prose)
def test_ordinary_text_is_unchanged(key: str, text: str) -> None:
    assert KeyRedactor(key).text(text) == text
    frame = b"data: " + orjson.dumps({"choices": [{"delta": {"content": text}}]}) + b"\n\n"
    assert KeyRedactor(key).frame(frame) is frame  # the fast path hands the very frame back


@SETTINGS
@given(key=keys, which=st.integers(0, 9), fragment_at=st.integers(0, 80))
def test_an_error_frame_never_carries_the_key(key: str, which: int, fragment_at: int) -> None:
    redactor = KeyRedactor(key)
    start = fragment_at % (len(key) - FRAGMENT_CHARS + 1)
    for text in (f"Incorrect API key {echoes(key)[which]}", f"key ...{key[start:start + FRAGMENT_CHARS]}..."):
        for frame in (b"data: " + orjson.dumps({"error": {"message": text, "type": "invalid_request_error"}}),
                      b"data: " + orjson.dumps({"type": "error", "error": {"message": text}})):
            out = redactor.frame(frame + b"\n\n")
            assert leaks(key, out.decode()) == []
            assert leaks(key, orjson.loads(out[6:]).__repr__()) == []


def test_exact_and_encoded_forms_become_redacted_in_place() -> None:
    key = "sk-test-" + "0123456789abcdef" * 2 + "/+="
    redactor = KeyRedactor(key)
    assert redactor.text(f"bad key {key}.") == f"bad key {REDACTED}."
    assert redactor.text(f"url ?key={quote_plus(key)}&x=1") == f"url ?key={REDACTED}&x=1"
    assert redactor.text(f"path /{quote(key, safe='').lower()}/") == f"path /{REDACTED}/"
    assert redactor.text(f"KEY {key.upper()}") == f"KEY {REDACTED}"
    assert redactor.text("nothing here") == "nothing here"


def test_an_answer_chunk_with_part_of_the_key_cannot_go_out() -> None:
    key = "sk-test-" + "0123456789abcdef" * 2
    redactor = KeyRedactor(key)
    for delta in ({"content": f"your key is {key[4:20]}"}, {"reasoning_content": key[::-1]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": key[10:30].upper()}}]}):
        with pytest.raises(KeyInAnswer):
            redactor.frame(b"data: " + orjson.dumps({"choices": [{"delta": delta}]}) + b"\n\n")
    with pytest.raises(KeyInAnswer):  # not JSON: it cannot be told what it is, so it does not go out
        redactor.frame(b"data: <" + key[2:20].encode() + b"\n\n")
    # The whole key in an answer is replaced where it stands.
    chunk = {"choices": [{"delta": {"content": f"k={key}"}}]}
    whole = redactor.frame(b"data: " + orjson.dumps(chunk) + b"\n\n")
    assert orjson.loads(whole[6:])["choices"][0]["delta"]["content"] == f"k={REDACTED}"


def test_json_escapes_do_not_hide_the_key() -> None:
    key = "sk-test-" + "0123456789abcdef" * 2
    escaped = "".join(f"\\u{ord(c):04x}" for c in key).encode()
    frame = b'data: {"error": {"message": "bad key ' + escaped + b'"}}\n\n'
    out = KeyRedactor(key).frame(frame)
    assert orjson.loads(out[6:])["error"]["message"] == f"bad key {REDACTED}"
    with pytest.raises(KeyInAnswer):
        content = escaped[:6 * 14]  # 14 escaped characters of the key
        KeyRedactor(key).frame(b'data: {"choices": [{"delta": {"content": "' + content + b'"}}]}\n\n')


def test_redact_keeps_its_shapes_and_an_empty_secret_is_no_secret() -> None:
    other = "sk-proj-" + "a" * 30
    assert redact(f"a {other} b") == f"a {REDACTED} b"
    assert redact("plain text", "") == "plain text"
    assert KeyRedactor("").frame(b"data: {}\n\n") == b"data: {}\n\n"
    assert KeyRedactor("").text(f"x {other}") == f"x {REDACTED}"


def test_redactors_build_each_keys_redactor_once_and_keep_only_the_most_recent() -> None:
    keys = ["sk-test-" + "".join(str(i) * 24) for i in range(4)]
    redactors = Redactors(size=2)
    first = redactors.for_key(keys[0])
    assert redactors.for_key(keys[0]) is first
    assert first.text(f"bad key {keys[0]}") == f"bad key {REDACTED}"
    redactors.for_key(keys[1])
    redactors.for_key(keys[0])  # used again: now the most recent
    redactors.for_key(keys[2])  # evicts keys[1], the least recently used
    assert redactors.for_key(keys[0]) is first
    assert keys[0] not in repr(redactors) and "kept=3" not in repr(redactors)
    assert redactors.for_key(keys[3]).text(keys[3]) == REDACTED
    assert redactors.for_key(keys[0]) is first  # keys[2] went, keys[0] stayed

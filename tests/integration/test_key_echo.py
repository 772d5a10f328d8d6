"""An upstream that echoes the org's key never shows it to the client nor to the log.

The hostile upstream answers every call on the BYOK route with the key it received, echoed as it was
sent, percent-encoded, case-folded, reversed, in part or split: inside an SSE error event (OpenAI,
Anthropic and Gemini formats), inside a non-streamed 4xx/5xx error body, and inside an answer's text.
Both front doors are driven. Then every response (headers and bodies), every log record at DEBUG
and every database row are searched for the key, its encodings and each of its 12-character runs,
forwards and reversed, in any letter case.
"""

import secrets
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import httpx
import orjson
import pytest
from aiohttp import web
from sqlalchemy import select

from alumia.redact import FRAGMENT_CHARS, REDACTED, WITHHELD
from alumia.storage.tables import metadata

from hostile import Gateway, Org, Upstream, auth, sse

CHAT, MESSAGES = "/v1/chat/completions", "/v1/messages"
MODELS = {"openai": "gpt-5.6-luna", "anthropic": "claude-haiku-4-5", "gemini": "gemini-3.7-flash"}
ECHOES: dict[str, Callable[[str], str]] = {
    "exact": lambda key: key,
    "quote": lambda key: quote(key, safe=""),
    "quote-lower-hex": lambda key: quote(key, safe="").lower(),
    "quote-plus": quote_plus,
    "upper": str.upper,
    "swapcase": str.swapcase,
    "reversed": lambda key: key[::-1],
    "fragment": lambda key: key[5:5 + FRAGMENT_CHARS + 2],
    "split": lambda key: key[:len(key) // 2] + " ... " + key[len(key) // 2:],
}
# What the client must see instead: the whole key replaced where it stood, or the text withheld.
WHOLE = {"exact", "quote", "quote-lower-hex", "quote-plus", "upper", "swapcase"}


def canary() -> str:
    """A fake key, made now, with characters that percent-encoding changes."""
    return "sk-test-" + secrets.token_hex(12) + "+/" + secrets.token_hex(8)


def needles(key: str) -> list[str]:
    """The key, its encodings, and every 12-character run of it forwards and reversed, lower-cased."""
    runs = [key[i:i + FRAGMENT_CHARS] for i in range(len(key) - FRAGMENT_CHARS + 1)]
    forms = [key, quote(key), quote(key, safe=""), quote_plus(key), *runs, *(run[::-1] for run in runs)]
    return [form.lower() for form in forms]


def assert_nowhere(keys: list[str], text: str, where: str) -> None:
    lowered = text.lower()
    for key in keys:
        for needle in needles(key):
            assert needle not in lowered, f"{where} carries part of a key: {needle[:4]}…"


def provider_error(provider: str, message: str) -> dict:
    """An error body in the provider's own format."""
    if provider == "anthropic":
        return {"type": "error", "error": {"type": "authentication_error", "message": message}}
    if provider == "gemini":
        return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
    return {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}


def streamed_error(provider: str, message: str) -> list[bytes]:
    """A stream that starts, then reports an error in the provider's format."""
    error = orjson.dumps(provider_error(provider, message))
    if provider == "anthropic":
        start = {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3}}}
        return [b"event: message_start\ndata: " + orjson.dumps(start) + b"\n\n",
                b"event: error\ndata: " + error + b"\n\n"]
    if provider == "gemini":
        first = {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}}]}
        return [b"data: " + orjson.dumps(first) + b"\n\n", error + b"\n"]  # Gemini's bare JSON error
    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    return [b"data: " + orjson.dumps(first) + b"\n\n", b"data: " + error + b"\n\n"]



async def byok_org(gw: Gateway) -> tuple[Org, dict[str, str]]:
    """An org with a canary BYOK key for each of the three formats' providers."""
    org = await gw.new_org()
    keys = {provider: canary() for provider in MODELS}
    for provider, key in keys.items():
        response = await gw.client.post("/api/v1/billing/byok-keys", headers=auth(org),
                                        json={"provider": provider, "apiKey": key})
        assert response.status_code == 201, response.text
    return org, keys


def request_body(door: str, provider: str, stream: bool) -> dict:
    body = {"model": MODELS[provider], "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return {**body, "max_tokens": 50} if door == MESSAGES else body


def error_texts(door: str, response: httpx.Response, stream: bool) -> list[str]:
    """The error messages the client was given, in the door's own shapes."""
    if not stream:
        body = response.json()
        return [body["error"]["message"]]
    payloads = [orjson.loads(line[6:]) for line in response.text.splitlines()
                if line.startswith("data: ") and line != "data: [DONE]"]
    if door == MESSAGES:
        return [p["error"]["message"] for p in payloads if p.get("type") == "error"]
    return [p["error"]["message"] for p in payloads if "error" in p]


async def dump_database(gw: Gateway) -> str:
    lines = []
    async with gw.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                lines.extend(f"{table.name}.{name}={value!r}" for name, value in row._mapping.items())
    return "\n".join(lines)


@pytest.mark.parametrize("stream", [False, True], ids=["error-body", "sse-error-event"])
@pytest.mark.parametrize("door", [CHAT, MESSAGES])
async def test_an_upstream_echoing_the_key_never_shows_it(gw: Gateway, upstream: Upstream, door: str,
                                                          stream: bool) -> None:
    org, keys = await byok_org(gw)
    transcript: list[str] = []
    case: dict = {}

    async def answer(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        assert key == keys[provider]  # the BYOK key is what the upstream received, and what it echoes
        message = f"Incorrect API key provided: {ECHOES[case['echo']](key)}. Find yours in your account."
        if case["stream"]:
            return await sse(request, streamed_error(provider, message))
        return web.json_response(provider_error(provider, message), status=case["status"])

    upstream.script = answer
    statuses = [401, 400, 500]
    for n, echo in enumerate(ECHOES):
        for provider in MODELS:
            case.update(echo=echo, stream=stream, status=statuses[n % 3])
            body = request_body(door, provider, stream)
            response = await gw.client.post(door, json=body, headers=auth(org))
            transcript.append("\n".join([str(response.status_code), *map(str, response.headers.items()),
                                         response.text]))
            assert response.headers["x-alumia-route"] == "byok"
            if stream:
                assert response.status_code == 200, response.text
            else:
                status = {401: 401, 400: 400, 500: 502}[case["status"]]
                assert response.status_code == status, response.text
            texts = error_texts(door, response, stream)
            assert texts, response.text
            # The provider's text was passed on, made safe: the key replaced, or the text withheld.
            expected = {REDACTED} if echo in WHOLE else {WITHHELD}
            if provider == "gemini" and stream:
                # Gemini's adapter cuts key shapes out of its error text first, which can leave a
                # fragment of the key behind: then the text is withheld.
                expected.add(WITHHELD)
            assert any(e in text for text in texts for e in expected), (echo, provider, texts)

    assert f"POST http://gateway.test{door}" in gw.log_text(), "the calls were not logged: nothing searched"
    assert_nowhere(list(keys.values()), "\n".join(transcript), "a response")
    assert_nowhere(list(keys.values()), gw.log_text(), "the log")
    assert_nowhere(list(keys.values()), await dump_database(gw), "a database row")


@pytest.mark.parametrize("door", [CHAT, MESSAGES])
async def test_an_answer_carrying_part_of_the_key_ends_the_stream(gw: Gateway, upstream: Upstream,
                                                                  door: str) -> None:
    org, keys = await byok_org(gw)

    async def answer(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        deltas = [{"content": "Sure. "}, {"content": f"Your key starts {key[:20]}"},
                  {"content": " and more."}]
        chunks = [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": delta}]} for delta in deltas]
        frames = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks]
        return await sse(request, [*frames, b"data: [DONE]\n\n"])

    upstream.script = answer
    response = await gw.client.post(door, json=request_body(door, "openai", True), headers=auth(org))
    assert response.status_code == 200
    texts = error_texts(door, response, True)
    assert len(texts) == 1 and "withheld because it contained part of the key" in texts[0]
    assert "Sure. " in response.text and " and more." not in response.text and "[DONE]" not in response.text
    record, _hold, entries = await gw.record_hold_entries(org)
    assert (record["status"], record["error_code"], record["route"], entries) == (
        "upstream_error", "KEY_IN_ANSWER", "byok", [])
    assert_nowhere(list(keys.values()), response.text, "the response")
    assert_nowhere(list(keys.values()), gw.log_text(), "the log")


@pytest.mark.parametrize("door", [CHAT, MESSAGES])
@pytest.mark.parametrize("echo", ["exact", "upper", "fragment"])
async def test_a_non_streamed_answer_carrying_the_key_never_shows_it(gw: Gateway, upstream: Upstream,
                                                                     door: str, echo: str) -> None:
    org, keys = await byok_org(gw)

    async def answer(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        return web.json_response({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": f"Sure. Your key is {ECHOES[echo](key)} and more."}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}})

    upstream.script = answer
    response = await gw.client.post(door, json=request_body(door, "openai", False), headers=auth(org))
    if echo == "fragment":  # part of the key cannot be cut out of an answer: the answer is withheld
        assert response.status_code == 502, response.text
        assert "withheld because it contained part of the key" in response.text
    else:  # the whole key is replaced where it stood, and the rest of the answer is delivered
        assert response.status_code == 200, response.text
        assert f"Your key is {REDACTED} and more." in response.text
    assert_nowhere(list(keys.values()), response.text, "the answer")
    assert_nowhere(list(keys.values()), gw.log_text(), "the log")

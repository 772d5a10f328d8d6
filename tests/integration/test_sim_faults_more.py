"""The simulator's hold, overrun and mid-stream error faults, over real HTTP on 127.0.0.1.

Expected texts and token counts are worked out by hand from the documented rules
(`alumia.sim.openai_format`, `alumia.sim.faults`), not by calling them.
"""

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from alumia.domain.catalog import load_catalog
from alumia.sim.faults import MAX_OVERRUN, FaultError, Faults, parse_faults
from alumia.sim.server import SimServer

CATALOG = load_catalog()
OPENAI_FORMAT = [name for name, p in CATALOG.providers.items() if p.wire_format == "openai"]
MODEL = "sim-model-1"
VERSION = {"anthropic-version": "2023-06-01"}
# "Say hello to the simulator" is 5 words: a one-message prompt is 4 + 5 = 9 tokens.
PROMPT = "Say hello to the simulator"
PROMPT_TOKENS = 9
ECHO = PROMPT.split()
STREAM_ERROR = {"error": {"message": "Simulated fault: the server had an error while streaming the response.",
                          "type": "server_error", "code": "server_error"}}
ANTHROPIC_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
GEMINI_ERROR = (b'{\n  "error": {\n    "code": 503,\n    "message": "The model is overloaded. Please try '
                b'again later.",\n    "status": "UNAVAILABLE"\n  }\n}')


def fake_key(prefix: str = "sk-test-") -> str:
    """A throwaway key made at run time."""
    return prefix + secrets.token_hex(8)


def reply(provider: str, model: str = MODEL) -> list[str]:
    """The words of the full reply to PROMPT."""
    return ["Simulated", "reply", "from", f"{provider}/{model}:", *ECHO]


def more(n: int) -> list[str]:
    return [f"more{i}" for i in range(1, n + 1)]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    # Its own simulator: `/_sim/held` counts every held call of a simulator, so no other test may share it.
    with SimServer() as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
async def ahttp() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def openai_call(sim: SimServer, http: httpx.Client, provider: str, text: str, *, key: str | None = None,
                **fields: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], **fields}
    return http.post(f"{sim.base_url(provider)}/chat/completions", json=body,
                     headers={"Authorization": f"Bearer {key or fake_key()}"})


def anthropic_call(sim: SimServer, http: httpx.Client, text: str, **fields: Any) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": text}], **fields}
    return http.post(f"{sim.base_url('anthropic')}/messages", json=body,
                     headers={"x-api-key": fake_key("sk-ant-test-"), **VERSION})


def gemini_call(sim: SimServer, http: httpx.Client, text: str, *, stream: bool = False, sse: bool = True,
                **fields: Any) -> httpx.Response:
    method = "streamGenerateContent" + ("?alt=sse" if sse else "") if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": text}]}], **fields}
    return http.post(f"{sim.base_url('gemini')}/models/{MODEL}:{method}", json=body,
                     headers={"x-goog-api-key": fake_key("AIza-test-")})


def sse_frames(body: bytes) -> list[bytes]:
    """The frames of an SSE body, which must end with a blank line."""
    assert body.endswith(b"\n\n"), body[-80:]
    return body[:-2].split(b"\n\n")


def data_payloads(body: bytes) -> list[Any]:
    """The decoded `data:` payloads of an OpenAI-style SSE body; comment frames are skipped."""
    out = []
    for frame in sse_frames(body):
        if frame.startswith(b":"):
            continue
        assert frame.startswith(b"data: ") and b"\n" not in frame, frame
        out.append(frame[6:] if frame == b"data: [DONE]" else orjson.loads(frame[6:]))
    return out


def anthropic_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, payload) of every event of an Anthropic SSE body."""
    out = []
    for frame in sse_frames(body):
        event, data = frame.split(b"\n")
        assert event.startswith(b"event: ") and data.startswith(b"data: "), frame
        out.append((event[7:].decode(), orjson.loads(data[6:])))
    return out


# Parsing -------------------------------------------------------------------------------------------


def test_the_new_directives_parse() -> None:
    assert parse_faults("[[sim:hold]]") == Faults(hold=True)
    assert parse_faults("[[sim: overrun = 7 ;hold]]") == Faults(hold=True, overrun=7)
    assert parse_faults("[[sim:stream_error_after=0]]") == Faults(stream_error_after=0)
    assert parse_faults(f"[[sim:overrun={MAX_OVERRUN};stream_error_after=12]]") == Faults(
        overrun=MAX_OVERRUN, stream_error_after=12)


@pytest.mark.parametrize("text", [
    "[[sim:hold=1]]", "[[sim:overrun]]", "[[sim:overrun=0]]", f"[[sim:overrun={MAX_OVERRUN + 1}]]",
    "[[sim:stream_error_after=-1]]", "[[sim:stream_error_after]]", "[[sim:stream_error_after=x]]",
    "[[sim:cut_after=2;stream_error_after=1]]",
])
def test_bad_new_directives_are_refused(text: str) -> None:
    with pytest.raises(FaultError):
        parse_faults(text)


def test_a_bad_new_directive_is_a_400_over_http(sim: SimServer, http: httpx.Client) -> None:
    response = openai_call(sim, http, "openai", "x [[sim:overrun=0]]")
    assert response.status_code == 400
    assert "overrun" in response.json()["error"]["message"]
    both = openai_call(sim, http, "openai", "x [[sim:cut_after=1;stream_error_after=1]]", stream=True)
    assert both.status_code == 400 and "cannot be combined" in both.json()["error"]["message"]


# Hold ----------------------------------------------------------------------------------------------


async def held_count(client: httpx.AsyncClient, sim: SimServer) -> int:
    response = await client.get(f"http://{sim.host}:{sim.port}/_sim/held")
    assert response.status_code == 200
    return response.json()["held"]


async def release(client: httpx.AsyncClient, sim: SimServer) -> int:
    response = await client.post(f"http://{sim.host}:{sim.port}/_sim/release")
    assert response.status_code == 200
    return response.json()["released"]


async def wait_until_held(client: httpx.AsyncClient, sim: SimServer, count: int,
                          seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while (held := await held_count(client, sim)) != count:
        assert time.monotonic() < deadline, f"{held} calls held, waited for {count}"
        await asyncio.sleep(0.02)


def held_requests(sim: SimServer, key: str, text: str) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """One request of each format, streaming and not: (url, headers, body)."""
    user = [{"role": "user", "content": text}]
    contents = [{"role": "user", "parts": [{"text": text}]}]
    gemini = f"{sim.base_url('gemini')}/models/{MODEL}"
    return [
        (f"{sim.base_url('openai')}/chat/completions", {"Authorization": f"Bearer {key}"},
         {"model": MODEL, "messages": user}),
        (f"{sim.base_url('groq')}/chat/completions", {"Authorization": f"Bearer {key}"},
         {"model": MODEL, "messages": user, "stream": True}),
        (f"{sim.base_url('anthropic')}/messages", {"x-api-key": key, **VERSION},
         {"model": MODEL, "max_tokens": 50, "messages": user}),
        (f"{sim.base_url('anthropic')}/messages", {"x-api-key": key, **VERSION},
         {"model": MODEL, "max_tokens": 50, "messages": user, "stream": True}),
        (f"{gemini}:generateContent", {"x-goog-api-key": key}, {"contents": contents}),
        (f"{gemini}:streamGenerateContent?alt=sse", {"x-goog-api-key": key}, {"contents": contents}),
    ]


async def test_held_calls_wait_for_the_release(sim: SimServer, http: httpx.Client,
                                               ahttp: httpx.AsyncClient) -> None:
    key = fake_key()
    requests = held_requests(sim, key, f"{PROMPT} [[sim:hold]]")
    before = len(sim.calls())
    calls = [asyncio.create_task(ahttp.post(url, headers=headers, json=body))
             for url, headers, body in requests]
    try:
        await wait_until_held(ahttp, sim, len(requests))
        # Each was received and recorded before being held.
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert [c["keySha256"] for c in sim.calls()[before:]] == [digest] * len(requests)
        await asyncio.sleep(0.3)
        assert not any(call.done() for call in calls)  # none answered while held
        assert await held_count(ahttp, sim) == len(requests)
    finally:
        released = await release(ahttp, sim)
    assert released == len(requests)
    responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * len(requests)
    # The answers are the ordinary ones, with the directive removed as always.
    openai_body, groq_stream, anthropic_body, anthropic_stream, gemini_body, gemini_stream = responses
    assert openai_body.json()["choices"][0]["message"]["content"] == " ".join(reply("openai"))
    assert groq_stream.content.endswith(b"data: [DONE]\n\n")
    assert anthropic_body.json()["content"][0]["text"] == " ".join(reply("anthropic"))
    assert anthropic_events(anthropic_stream.content)[-1][0] == "message_stop"
    assert gemini_body.json()["candidates"][0]["content"]["parts"][0]["text"] == " ".join(reply("gemini"))
    assert b'"finishReason":"STOP"' in gemini_stream.content
    assert await held_count(ahttp, sim) == 0
    assert await release(ahttp, sim) == 0


async def test_a_release_lets_go_only_the_calls_held_at_that_moment(sim: SimServer,
                                                                    ahttp: httpx.AsyncClient) -> None:
    url, headers, body = held_requests(sim, fake_key(), f"{PROMPT} [[sim:hold]]")[0]
    first = asyncio.create_task(ahttp.post(url, headers=headers, json=body))
    second: asyncio.Task[httpx.Response] | None = None
    try:
        await wait_until_held(ahttp, sim, 1)
        assert await release(ahttp, sim) == 1
        assert (await first).status_code == 200
        second = asyncio.create_task(ahttp.post(url, headers=headers, json=body))
        await wait_until_held(ahttp, sim, 1)
        await asyncio.sleep(0.2)
        assert not second.done()  # held by the next release, not the last one
    finally:
        await release(ahttp, sim)
    assert second is not None and (await second).status_code == 200


async def test_a_held_call_with_a_status_fault_fails_after_the_release(sim: SimServer,
                                                                       ahttp: httpx.AsyncClient) -> None:
    url, headers, body = held_requests(sim, fake_key(), f"{PROMPT} [[sim:hold;status=503]]")[0]
    call = asyncio.create_task(ahttp.post(url, headers=headers, json=body))
    try:
        await wait_until_held(ahttp, sim, 1)
    finally:
        await release(ahttp, sim)
    assert (await call).status_code == 503


def test_hold_comes_after_the_key_and_request_checks(sim: SimServer, http: httpx.Client) -> None:
    # These would hang until the safety timeout if the hold came first.
    bad_key = openai_call(sim, http, "openai", "x [[sim:hold]]", key=fake_key("sk-test-invalid-"))
    assert bad_key.status_code == 401
    held_user = [{"role": "user", "content": "x [[sim:hold]]"}]
    no_max_tokens = http.post(f"{sim.base_url('anthropic')}/messages",
                              headers={"x-api-key": fake_key(), **VERSION},
                              json={"model": MODEL, "messages": held_user})
    assert no_max_tokens.status_code == 400
    no_contents = http.post(f"{sim.base_url('gemini')}/models/{MODEL}:generateContent",
                            headers={"x-goog-api-key": fake_key()}, json={"contents": []})
    assert no_contents.status_code == 400
    assert sim.held() == 0


def test_a_call_never_released_answers_after_the_safety_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="alumia.sim.held")
    with SimServer(hold_timeout=0.5) as short, httpx.Client(timeout=10) as client:
        started = time.monotonic()
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"{PROMPT} [[sim:hold]]"}]}
        response = client.post(f"{short.base_url('openai')}/chat/completions",
                               headers={"Authorization": f"Bearer {fake_key()}"}, json=body)
        elapsed = time.monotonic() - started
        assert short.held() == 0
    assert response.status_code == 200 and elapsed >= 0.5
    assert response.json()["choices"][0]["message"]["content"] == " ".join(reply("openai"))
    warnings = [r for r in caplog.records if r.name == "alumia.sim.held" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "never released" in warnings[0].getMessage()
    assert f"openai/{MODEL}" in warnings[0].getMessage()


# Overrun -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_overrun_ignores_max_tokens_on_every_openai_format_provider(sim: SimServer, http: httpx.Client,
                                                                    provider: str) -> None:
    response = openai_call(sim, http, provider, f"{PROMPT} [[sim:overrun=4]]", max_tokens=3)
    assert response.status_code == 200
    body = response.json()
    words = [*reply(provider), *more(4)]
    assert body["choices"][0]["message"]["content"] == " ".join(words)
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert body["usage"]["completion_tokens"] == len(words) == 13
    assert body["usage"]["total_tokens"] == PROMPT_TOKENS + 13


def test_overrun_usage_in_full_and_with_reasoning(sim: SimServer, http: httpx.Client) -> None:
    response = openai_call(sim, http, "openai", f"{PROMPT} [[sim:overrun=2;reasoning=5]]",
                           max_completion_tokens=1)
    body = response.json()
    assert body["choices"][0]["message"]["content"] == " ".join([*reply("openai"), "more1", "more2"])
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 11 + 5, "total_tokens": 9 + 11 + 5,
                             "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 5}}


def test_overrun_streams_one_chunk_per_word(sim: SimServer, http: httpx.Client) -> None:
    response = openai_call(sim, http, "openai", f"{PROMPT} [[sim:overrun=3]]", max_tokens=2, stream=True,
                           stream_options={"include_usage": True})
    payloads = data_payloads(response.content)
    assert payloads[-1] == b"[DONE]"
    chunks = payloads[:-1]
    words = [*reply("openai"), *more(3)]
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert contents == [words[0], *(" " + w for w in words[1:])]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(words) + 1) + ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(words) == 12


def test_overrun_does_not_change_a_forced_tool_call(sim: SimServer, http: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]
    plain = openai_call(sim, http, "openai", PROMPT, tools=tools, tool_choice="required").json()
    over = openai_call(sim, http, "openai", f"{PROMPT} [[sim:overrun=9]]", tools=tools,
                       tool_choice="required").json()
    assert over["choices"][0]["finish_reason"] == "tool_calls"
    assert over["choices"][0]["message"]["tool_calls"][0]["function"] == \
        plain["choices"][0]["message"]["tool_calls"][0]["function"]
    assert over["usage"] == plain["usage"]


def test_overrun_on_anthropic(sim: SimServer, http: httpx.Client) -> None:
    words = [*reply("anthropic"), *more(5)]
    body = anthropic_call(sim, http, f"{PROMPT} [[sim:overrun=5]]", max_tokens=2).json()
    assert body["content"] == [{"type": "text", "text": " ".join(words)}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": PROMPT_TOKENS, "output_tokens": 14,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    events = anthropic_events(anthropic_call(sim, http, f"{PROMPT} [[sim:overrun=5]]", max_tokens=2,
                                             stream=True).content)
    deltas = [p["delta"]["text"] for name, p in events if name == "content_block_delta"]
    assert deltas == [words[0], *(" " + w for w in words[1:])]
    message_delta = next(p for name, p in events if name == "message_delta")
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"] == {"output_tokens": 14}
    assert events[-1][0] == "message_stop"


def test_overrun_on_gemini(sim: SimServer, http: httpx.Client) -> None:
    words = [*reply("gemini"), *more(4)]
    config = {"generationConfig": {"maxOutputTokens": 1}}
    body = gemini_call(sim, http, f"{PROMPT} [[sim:overrun=4]]", **config).json()
    candidate = body["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": " ".join(words)}]
    assert candidate["finishReason"] == "STOP"
    assert body["usageMetadata"] == {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": 13,
                                     "totalTokenCount": PROMPT_TOKENS + 13}
    streamed = gemini_call(sim, http, f"{PROMPT} [[sim:overrun=4]]", stream=True, **config)
    chunks = [orjson.loads(f[6:]) for f in sse_frames(streamed.content)]
    # Gemini streams 3 words a chunk: 13 words are 5 chunks, the last with the finish and full usage.
    texts = [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks]
    assert "".join(texts) == " ".join(words) and len(chunks) == 5
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None] * 4 + ["STOP"]
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 13


# Mid-stream errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_openai_format_stream_error_after_two_words(sim: SimServer, http: httpx.Client,
                                                    provider: str) -> None:
    response = openai_call(sim, http, provider, f"{PROMPT} [[sim:stream_error_after=2]]", stream=True,
                           stream_options={"include_usage": True})
    assert response.status_code == 200
    frames = sse_frames(response.content)
    if provider == "deepseek":
        assert frames[0] == b": keep-alive"
        frames = frames[1:]
    assert len(frames) == 4 and all(f.startswith(b"data: ") for f in frames)
    role, first, second = (orjson.loads(f[6:]) for f in frames[:3])
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert [first["choices"][0]["delta"]["content"], second["choices"][0]["delta"]["content"]] == \
        ["Simulated", " reply"]
    assert all(c["choices"][0]["finish_reason"] is None for c in (role, first, second))
    error = orjson.loads(frames[3][6:])
    if provider == "minimax":
        # MiniMax's business-status chunk, as its status faults send it.
        assert error["base_resp"] == {"status_code": 1024, "status_msg": "internal error"}
        assert "choices" not in error
    elif provider == "zhipu":
        assert error == {"error": {"code": "1234",
                                   "message": "Network error, please contact customer service"}}
    else:
        assert error == STREAM_ERROR
    assert b"[DONE]" not in response.content


def test_stream_error_after_zero_and_after_more_than_the_reply(sim: SimServer, http: httpx.Client) -> None:
    at_once = data_payloads(openai_call(sim, http, "openai", f"{PROMPT} [[sim:stream_error_after=0]]",
                                        stream=True).content)
    assert len(at_once) == 2 and at_once[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert at_once[1] == STREAM_ERROR
    # More events asked for than the reply has: every word, then the error instead of the finish.
    late = data_payloads(openai_call(sim, http, "openai", f"{PROMPT} [[sim:stream_error_after=50]]",
                                     stream=True, stream_options={"include_usage": True}).content)
    words = reply("openai")
    assert len(late) == 1 + len(words) + 1 and late[-1] == STREAM_ERROR
    assert "".join(c["choices"][0]["delta"]["content"] for c in late[1:-1]) == " ".join(words)
    assert all(c["choices"][0]["finish_reason"] is None and c["usage"] is None for c in late[:-1])


def test_stream_error_after_is_ignored_when_not_streaming(sim: SimServer, http: httpx.Client) -> None:
    body = openai_call(sim, http, "openai", f"{PROMPT} [[sim:stream_error_after=1]]").json()
    assert body["choices"][0]["message"]["content"] == " ".join(reply("openai"))
    assert body["choices"][0]["finish_reason"] == "stop"
    anthropic_body = anthropic_call(sim, http, f"{PROMPT} [[sim:stream_error_after=1]]").json()
    assert anthropic_body["stop_reason"] == "end_turn"
    gemini_body = gemini_call(sim, http, f"{PROMPT} [[sim:stream_error_after=1]]").json()
    assert gemini_body["candidates"][0]["finishReason"] == "STOP"


def test_stream_error_in_a_streamed_tool_call(sim: SimServer, http: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    payloads = data_payloads(openai_call(sim, http, "openai", f"{PROMPT} [[sim:stream_error_after=1]]",
                                         stream=True, tools=tools, tool_choice="required").content)
    assert len(payloads) == 3 and payloads[-1] == STREAM_ERROR
    assert payloads[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "f"
    assert "arguments" in payloads[1]["choices"][0]["delta"]["tool_calls"][0]["function"]


def test_the_openai_sdk_raises_on_the_stream_error(sim: SimServer, http: httpx.Client) -> None:
    client = openai.OpenAI(base_url=sim.base_url("openai"), api_key=fake_key(), max_retries=0,
                           http_client=http)
    stream = client.chat.completions.create(model=MODEL, stream=True, messages=[
        {"role": "user", "content": f"{PROMPT} [[sim:stream_error_after=1]]"}])
    got: list[str | None] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert got == ["", "Simulated"]
    assert raised.value.body == STREAM_ERROR["error"]


def test_anthropic_stream_error_after_one_delta(sim: SimServer, http: httpx.Client) -> None:
    response = anthropic_call(sim, http, f"{PROMPT} [[sim:stream_error_after=1]]", stream=True)
    assert response.status_code == 200
    events = anthropic_events(response.content)
    assert [name for name, _ in events] == ["message_start", "content_block_start", "ping",
                                            "content_block_delta", "error"]
    assert events[0][1]["message"]["usage"]["input_tokens"] == PROMPT_TOKENS
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "Simulated"}
    assert events[4][1] == ANTHROPIC_ERROR
    assert response.content.endswith(b'event: error\ndata: {"type":"error","error":'
                                     b'{"type":"overloaded_error","message":"Overloaded"}}\n\n')


def test_the_anthropic_sdk_raises_on_the_stream_error(sim: SimServer) -> None:
    with anthropic.Anthropic(base_url=sim.base_url("anthropic").removesuffix("/v1"), api_key=fake_key(),
                             max_retries=0) as client:
        stream = client.messages.create(model=MODEL, max_tokens=50, stream=True, messages=[
            {"role": "user", "content": f"{PROMPT} [[sim:stream_error_after=2]]"}])
        seen: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as raised:
            for event in stream:
                seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta", "content_block_delta"]
    assert raised.value.body == ANTHROPIC_ERROR


def test_gemini_stream_error_after_one_chunk(sim: SimServer, http: httpx.Client) -> None:
    sse = gemini_call(sim, http, f"{PROMPT} [[sim:stream_error_after=1]]", stream=True)
    assert sse.status_code == 200
    first, _, rest = sse.content.partition(b"\n\n")
    chunk = orjson.loads(first.removeprefix(b"data: "))
    assert chunk["candidates"][0]["content"]["parts"] == [{"text": "Simulated reply from"}]
    assert "finishReason" not in chunk["candidates"][0]
    assert chunk["usageMetadata"]["candidatesTokenCount"] == 3
    assert rest == GEMINI_ERROR + b"\n"  # raw, no `data:` prefix

    array = gemini_call(sim, http, f"{PROMPT} [[sim:stream_error_after=1]]", stream=True, sse=False)
    elements = orjson.loads(array.content)
    assert len(elements) == 2 and elements[0]["candidates"] == chunk["candidates"]
    assert array.content.endswith(b",\r\n" + GEMINI_ERROR + b"]")
    assert elements[1] == orjson.loads(GEMINI_ERROR)

    at_once = gemini_call(sim, http, f"{PROMPT} [[sim:stream_error_after=0]]", stream=True)
    assert at_once.content == GEMINI_ERROR + b"\n"
    # Past the end of the reply: every chunk, none with a finishReason, then the error.
    late = gemini_call(sim, http, f"{PROMPT} [[sim:stream_error_after=99]]", stream=True).content
    *frames, error = late.split(b"\n\n")
    assert error == GEMINI_ERROR + b"\n" and len(frames) == 3
    assert all(b"finishReason" not in f for f in frames)


def test_the_genai_sdk_raises_on_the_stream_error(sim: SimServer) -> None:
    options = genai_types.HttpOptions(base_url=f"http://{sim.host}:{sim.port}/gemini", api_version="v1beta")
    with genai.Client(api_key=fake_key("AIza-test-"), http_options=options) as client:
        texts: list[str | None] = []
        with pytest.raises(genai_errors.ServerError) as raised:
            for chunk in client.models.generate_content_stream(
                    model=MODEL, contents=f"{PROMPT} [[sim:stream_error_after=2]]"):
                texts.append(chunk.text)
    assert texts == ["Simulated reply from", " gemini/sim-model-1: Say hello"]
    assert raised.value.code == 503 and raised.value.status == "UNAVAILABLE"

"""Usage as each real provider shapes it, and provider-specific faults, over real HTTP.

The simulator is told through ``[[sim:cached=N;cache_write=K;reasoning=M]]`` how many prompt tokens
came from the cache (or were written to it) and how many reasoning tokens the model spent; each
provider must then report them in its own raw shape (shared/providers.md §3), which the gateway's
per-provider usage readers are tested against. The bodies are read with httpx, not the SDKs: an SDK
would normalise exactly the fields under test away.

Every expected usage below is written out by hand from the rules in the format modules' docstrings,
not computed by them. The prompt is always P = 16 tokens (system 4 + 3 words, user 4 + 5 words once
the directive is removed) and the reply C = 9 words (4 of prefix + the 5 echoed words); the directive
asks for N = 3 cached, M = 5 reasoning and, where the provider has cache writes, K = 2.
"""

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from alumia.domain.catalog import load_catalog
from alumia.sim.server import SimServer

import conformance

CATALOG = load_catalog()
OPENAI_FORMAT = [name for name, p in CATALOG.providers.items() if p.wire_format == "openai"]
MODEL = "sim-model-1"
SYSTEM = "You are terse."
COUNTS = "cached=3;reasoning=5"
P, C, N, M, K = 16, 9, 3, 5, 2


def user_text(directive: str) -> str:
    return f"Say hello {directive} to the simulator"


def messages(directive: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_text(directive)}]


def reply_text(provider: str, model: str = MODEL) -> str:
    return f"Simulated reply from {provider}/{model}: Say hello to the simulator"


def standard(*, cache_write: int | None = None) -> dict[str, Any]:
    prompt_details: dict[str, int] = {"cached_tokens": N}
    if cache_write is not None:
        prompt_details["cache_write_tokens"] = cache_write
    return {"prompt_tokens": P, "completion_tokens": C + M, "total_tokens": P + C + M,
            "prompt_tokens_details": prompt_details, "completion_tokens_details": {"reasoning_tokens": M}}


# provider -> (directive, exact usage). Reasoning inside completion_tokens except on xAI; moonshot has
# no details objects; deepseek adds hit/miss counts; openai alone reports cache writes.
USAGE: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": (f"{COUNTS};cache_write={K}", standard(cache_write=K)),
    "deepseek": (COUNTS, {**standard(), "prompt_cache_hit_tokens": N, "prompt_cache_miss_tokens": P - N}),
    "xai": (COUNTS, {**standard(), "completion_tokens": C}),
    "mistral": (COUNTS, standard()),
    "minimax": (COUNTS, standard()),
    "moonshot": (COUNTS, {"prompt_tokens": P, "completion_tokens": C + M, "total_tokens": P + C + M,
                          "cached_tokens": N}),
    "zhipu": (COUNTS, standard()),
    "xiaomi": (COUNTS, standard()),
    "nvidia": (COUNTS, standard()),
    "qwen": (COUNTS, standard()),
    "cerebras": (COUNTS, standard()),
    "groq": (COUNTS, standard()),
}


def time_info(created: int) -> dict[str, float]:
    # 0.0001 queue, P/100000 prompt, (C+M)/2000 completion, and their sum.
    return {"queue_time": 0.0001, "prompt_time": 0.00016, "completion_time": 0.007, "total_time": 0.00726,
            "created": float(created)}


def fake_key(marker: str = "") -> str:
    return f"sk-test-{marker}" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def chat(sim: SimServer, http: httpx.Client, provider: str, directive: str, **fields: Any) -> httpx.Response:
    return http.post(sim.base_url(provider) + "/chat/completions",
                     headers={"Authorization": f"Bearer {fake_key()}"},
                     json={"model": MODEL, "messages": messages(f"[[sim:{directive}]]"), **fields})


def sse_frames(body: bytes) -> list[bytes]:
    """Every frame of an SSE body, comments included, checking the framing."""
    assert body.endswith(b"\n\n")
    frames = body[:-2].split(b"\n\n")
    assert all(b"\n" not in frame for frame in frames), frames
    return frames


def stream_chunks(body: bytes) -> list[dict[str, Any]]:
    """The chunks of an OpenAI-style stream that ends with [DONE], comment frames left out."""
    frames = [f for f in sse_frames(body) if not f.startswith(b":")]
    assert all(f.startswith(b"data: ") for f in frames), frames
    assert frames[-1] == b"data: [DONE]"
    return [orjson.loads(f[len(b"data: "):]) for f in frames[:-1]]


def test_every_openai_format_provider_has_an_expected_usage() -> None:
    assert set(USAGE) == set(OPENAI_FORMAT)


@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_non_streaming_usage_in_the_providers_raw_shape(sim: SimServer, http: httpx.Client,
                                                        provider: str) -> None:
    directive, usage = USAGE[provider]
    response = chat(sim, http, provider, directive)
    assert response.status_code == 200
    body = response.json()
    assert body["usage"] == usage
    # Reasoning is counted, never shown: the reply is the plain one, with no reasoning_content.
    assert body["choices"][0]["message"] == {"role": "assistant", "content": reply_text(provider),
                                             "refusal": None}
    if provider == "cerebras":
        assert body["time_info"] == time_info(body["created"])
    else:
        assert "time_info" not in body
    assert "x_groq" not in body
    conformance.validate("CreateChatCompletionResponse", body)


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_streaming_usage_in_the_providers_raw_shape(sim: SimServer, http: httpx.Client, provider: str,
                                                    include_usage: bool) -> None:
    directive, usage = USAGE[provider]
    response = chat(sim, http, provider, directive, stream=True,
                    stream_options={"include_usage": include_usage})
    assert response.status_code == 200
    chunks = stream_chunks(response.content)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == reply_text(provider)
    assert not any("reasoning_content" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"

    usage_chunk = include_usage and provider != "moonshot"
    if usage_chunk:
        # The standard usage chunk: last, without choices; every earlier chunk says usage: null.
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage
        assert all(c["usage"] is None for c in chunks[:-1])
        assert ("time_info" in chunks[-1]) is (provider == "cerebras")
        if provider == "cerebras":
            assert chunks[-1]["time_info"] == time_info(chunks[-1]["created"])
    else:
        assert all("usage" not in c for c in chunks)
        assert chunks[-1] is finish[0]
    assert all("time_info" not in c for c in chunks[:-1])

    if provider == "moonshot":
        # Inside choices[0] of the finish chunk, with or without include_usage.
        assert finish[0]["choices"][0]["usage"] == usage
    else:
        assert all("usage" not in choice for c in chunks for choice in c["choices"])
    if provider == "groq":
        # x_groq.usage on the finish chunk always; the first chunk names the request only.
        groq_id = chunks[0]["x_groq"]["id"]
        assert groq_id.startswith("req_") and chunks[0]["x_groq"] == {"id": groq_id}
        assert finish[0]["x_groq"] == {"id": groq_id, "usage": usage}
        assert [c for c in chunks if "x_groq" in c] == [chunks[0], finish[0]]
    else:
        assert all("x_groq" not in c for c in chunks)
    for chunk in chunks:
        conformance.validate("CreateChatCompletionStreamResponse", chunk)


@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_streams_start_with_keep_alive_only_on_deepseek(sim: SimServer, http: httpx.Client,
                                                        provider: str) -> None:
    response = chat(sim, http, provider, "reasoning=0", stream=True)
    frames = sse_frames(response.content)
    comments = [f for f in frames if f.startswith(b":")]
    if provider == "deepseek":
        assert frames[0] == b": keep-alive" and comments == [b": keep-alive"]
    else:
        assert comments == []


def test_a_cut_stream_does_not_count_the_keep_alive(sim: SimServer, http: httpx.Client) -> None:
    received = b""
    with http.stream("POST", sim.base_url("deepseek") + "/chat/completions",
                     headers={"Authorization": f"Bearer {fake_key()}"},
                     json={"model": MODEL, "messages": messages("[[sim:cut_after=1]]"), "stream": True},
                     ) as response, pytest.raises(httpx.RemoteProtocolError):
        for piece in response.iter_raw():
            received += piece
    frames = sse_frames(received)
    assert len(frames) == 2 and frames[0] == b": keep-alive"
    assert orjson.loads(frames[1][len(b"data: "):])["choices"][0]["delta"]["role"] == "assistant"


def test_counts_default_to_zero(sim: SimServer, http: httpx.Client) -> None:
    plain = {"prompt_tokens": P, "completion_tokens": C, "total_tokens": P + C,
             "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}}
    assert chat(sim, http, "mistral", "delay_ms=0").json()["usage"] == plain
    openai_usage = chat(sim, http, "openai", "delay_ms=0").json()["usage"]
    assert openai_usage == {**plain, "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}}
    assert chat(sim, http, "deepseek", "delay_ms=0").json()["usage"] == {
        **plain, "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": P}
    assert chat(sim, http, "moonshot", "delay_ms=0").json()["usage"] == {
        "prompt_tokens": P, "completion_tokens": C, "total_tokens": P + C, "cached_tokens": 0}


def test_reasoning_rides_on_a_cut_reply_and_a_tool_call(sim: SimServer, http: httpx.Client) -> None:
    # The limit cuts the reply's words only; the reasoning tokens come on top.
    body = chat(sim, http, "qwen", "reasoning=5", max_tokens=3).json()
    assert body["choices"][0]["message"]["content"] == "Simulated reply from"
    assert body["choices"][0]["finish_reason"] == "length"
    assert (body["usage"]["completion_tokens"], body["usage"]["total_tokens"]) == (3 + M, P + 3 + M)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    # '{"city": "sim"}' is 2 words.
    called = chat(sim, http, "xai", "reasoning=5", tools=tools, tool_choice="required").json()
    assert called["choices"][0]["finish_reason"] == "tool_calls"
    assert called["usage"]["completion_tokens"] == 2  # xAI: reasoning left out
    assert called["usage"]["completion_tokens_details"] == {"reasoning_tokens": M}
    assert called["usage"]["total_tokens"] == P + 2 + M


def test_no_usage_wins_over_the_counts(sim: SimServer, http: httpx.Client) -> None:
    for provider in ("moonshot", "groq", "cerebras", "deepseek"):
        body = chat(sim, http, provider, f"{COUNTS};no_usage").json()
        assert "usage" not in body and "time_info" not in body
        streamed = chat(sim, http, provider, f"{COUNTS};no_usage", stream=True,
                        stream_options={"include_usage": True})
        assert b'"usage"' not in streamed.content and b"time_info" not in streamed.content


@pytest.mark.parametrize(("provider", "directive"), [
    ("mistral", "cached=17"),  # more than the 16 prompt tokens
    ("openai", "cached=15;cache_write=2"),  # 17 together
    ("deepseek", "cache_write=2"),  # only openai reports cache writes
    ("groq", "cached=x"),
    ("moonshot", "reasoning=-1"),
    ("zhipu", "status=429;cached=99"),  # a bad directive is a 400 before any fault
    ("minimax", "status=429;cache_write=1"),
])
def test_bad_counts_are_a_bad_request(sim: SimServer, http: httpx.Client, provider: str,
                                      directive: str) -> None:
    response = chat(sim, http, provider, directive)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages" and error["code"] == "invalid_value"


def test_the_whole_prompt_may_be_cached(sim: SimServer, http: httpx.Client) -> None:
    assert chat(sim, http, "deepseek", "cached=16").json()["usage"]["prompt_cache_miss_tokens"] == 0
    assert chat(sim, http, "openai", "cached=14;cache_write=2").json()["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 14, "cache_write_tokens": 2}


# --- anthropic ----------------------------------------------------------------------------------------

ANTHROPIC_MODEL = "claude-sonnet-5"
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


def messages_call(sim: SimServer, http: httpx.Client, directive: str, **fields: Any) -> httpx.Response:
    return http.post(sim.base_url("anthropic") + "/messages",
                     headers={**ANTHROPIC_HEADERS, "x-api-key": fake_key()},
                     json={"model": ANTHROPIC_MODEL, "max_tokens": 100, "system": SYSTEM,
                           "messages": [{"role": "user", "content": user_text(f"[[sim:{directive}]]")}],
                           **fields})


def test_anthropic_usage_excludes_the_cache_from_input(sim: SimServer, http: httpx.Client) -> None:
    body = messages_call(sim, http, f"{COUNTS};cache_write={K}").json()
    # input_tokens = P - N - K; thinking inside output_tokens, with no count of its own.
    assert body["usage"] == {"input_tokens": P - N - K, "output_tokens": C + M,
                             "cache_creation_input_tokens": K, "cache_read_input_tokens": N}
    assert body["content"] == [{"type": "text", "text": reply_text("anthropic", ANTHROPIC_MODEL)}]


def test_anthropic_streamed_usage(sim: SimServer, http: httpx.Client) -> None:
    response = messages_call(sim, http, f"{COUNTS};cache_write={K}", stream=True)
    frames = response.content.removesuffix(b"\n\n").split(b"\n\n")
    events = [orjson.loads(frame.split(b"\ndata: ", 1)[1]) for frame in frames]
    start = events[0]
    assert start["type"] == "message_start"
    assert start["message"]["usage"] == {"input_tokens": P - N - K, "output_tokens": 1,
                                         "cache_creation_input_tokens": K, "cache_read_input_tokens": N}
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["usage"] == {"output_tokens": C + M}
    assert not any(e.get("delta", {}).get("type") == "thinking_delta" for e in events)
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == reply_text("anthropic", ANTHROPIC_MODEL)


def test_anthropic_counts_default_to_zero_and_bad_ones_are_refused(sim: SimServer,
                                                                   http: httpx.Client) -> None:
    assert messages_call(sim, http, "delay_ms=0").json()["usage"] == {
        "input_tokens": P, "output_tokens": C, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0}
    for directive in ("cached=10;cache_write=7", "cache_write=abc"):
        response = messages_call(sim, http, directive)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    # The whole prompt may come from the cache.
    assert messages_call(sim, http, "cached=10;cache_write=6").json()["usage"]["input_tokens"] == 0


# --- gemini -------------------------------------------------------------------------------------------

GEMINI_MODEL = "gemini-3.5-flash"


def generate(sim: SimServer, http: httpx.Client, directive: str, method: str = "generateContent",
             query: str = "") -> httpx.Response:
    contents = [{"role": "user", "parts": [{"text": user_text(f"[[sim:{directive}]]")}]}]
    return http.post(f"{sim.base_url('gemini')}/models/{GEMINI_MODEL}:{method}{query}",
                     headers={"x-goog-api-key": f"AIza-test-{secrets.token_hex(16)}"},
                     json={"systemInstruction": {"parts": [{"text": SYSTEM}]}, "contents": contents})


def test_gemini_usage_keeps_thoughts_out_of_candidates(sim: SimServer, http: httpx.Client) -> None:
    body = generate(sim, http, COUNTS).json()
    assert body["usageMetadata"] == {"promptTokenCount": P, "candidatesTokenCount": C,
                                     "totalTokenCount": P + C + M, "cachedContentTokenCount": N,
                                     "thoughtsTokenCount": M}
    assert body["candidates"][0]["content"]["parts"] == [{"text": reply_text("gemini", GEMINI_MODEL)}]
    # Both counts are left out when zero.
    assert generate(sim, http, "delay_ms=0").json()["usageMetadata"] == {
        "promptTokenCount": P, "candidatesTokenCount": C, "totalTokenCount": P + C}


def test_gemini_streamed_usage(sim: SimServer, http: httpx.Client) -> None:
    response = generate(sim, http, COUNTS, "streamGenerateContent", "?alt=sse")
    chunks = [orjson.loads(frame[len(b"data: "):]) for frame in sse_frames(response.content)]
    # Three chunks of three words; cached and thoughts counts in full on each.
    assert [c["usageMetadata"] for c in chunks] == [
        {"promptTokenCount": P, "candidatesTokenCount": n, "totalTokenCount": P + n + M,
         "cachedContentTokenCount": N, "thoughtsTokenCount": M} for n in (3, 6, 9)]
    assert not any(part.get("thought") for c in chunks for part in c["candidates"][0]["content"]["parts"])


def test_gemini_refuses_bad_counts(sim: SimServer, http: httpx.Client) -> None:
    for directive in ("cached=17", "cache_write=1", "reasoning=1e3"):
        response = generate(sim, http, directive)
        assert response.status_code == 400
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


# --- provider-specific status faults ------------------------------------------------------------------

@pytest.mark.parametrize(("status", "code"), [(429, 1002), (401, 1004), (402, 1008), (504, 1001),
                                              (503, 1024), (400, 1024)])
def test_minimax_faults_are_a_base_resp_in_a_200(sim: SimServer, http: httpx.Client, status: int,
                                                 code: int) -> None:
    response = chat(sim, http, "minimax", f"status={status}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "retry-after" not in response.headers
    body = response.json()
    assert "choices" not in body and "error" not in body
    assert body["base_resp"]["status_code"] == code
    assert isinstance(body["base_resp"]["status_msg"], str) and body["base_resp"]["status_msg"]
    assert body["model"] == MODEL


def test_a_streamed_minimax_fault_is_one_base_resp_event(sim: SimServer, http: httpx.Client) -> None:
    response = chat(sim, http, "minimax", "status=429", stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = sse_frames(response.content)
    assert len(frames) == 1 and frames[0].startswith(b"data: ")
    event = orjson.loads(frames[0][len(b"data: "):])
    assert event["base_resp"]["status_code"] == 1002 and "choices" not in event


def test_other_minimax_answers_are_unchanged(sim: SimServer, http: httpx.Client) -> None:
    # A bad key stays the HTTP 401 of shared/providers.md §2; a call without a fault has choices.
    bad = http.post(sim.base_url("minimax") + "/chat/completions",
                    headers={"Authorization": f"Bearer {fake_key('invalid-')}"},
                    json={"model": MODEL, "messages": messages("")})
    assert bad.status_code == 401 and bad.json()["base_resp"]["status_code"] == 1004
    assert chat(sim, http, "minimax", "delay_ms=0").json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(("status", "code"), [(429, "1302"), (402, "1113"), (404, "1211"), (500, "1234"),
                                              (400, "1234")])
def test_zhipu_faults_carry_its_business_code(sim: SimServer, http: httpx.Client, status: int,
                                              code: str) -> None:
    response = chat(sim, http, "zhipu", f"status={status}")
    assert response.status_code == status
    body = response.json()
    assert body.keys() == {"error"} and body["error"].keys() == {"code", "message"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert (response.headers.get("retry-after") == "1") is (status == 429)
    # Other providers keep OpenAI's envelope.
    assert chat(sim, http, "qwen", f"status={status}").json()["error"]["code"] != code

"""The simulated upstream over real HTTP: OpenAI-format providers, bad keys, call records, conformance,
forced tool calls and scripted faults.

Expected texts and token counts are worked out by hand from the rule in `alumia.sim.openai_format`, not
by calling it, so a change to the rule has to be made here too, on purpose.
"""

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from jsonschema import Draft202012Validator

from alumia.domain.catalog import PROVIDER_NAMES, load_catalog
from alumia.sim.env import sim_base_url, sim_env
from alumia.sim.faults import FaultError, Faults, parse_faults, strip_directives
from alumia.sim.openai_format import prompt_tokens, reply_words
from alumia.sim.server import SimServer
from alumia.sim.tool_args import ToolCall, build_arguments

import conformance

CATALOG = load_catalog()
OPENAI_FORMAT = [name for name, p in CATALOG.providers.items() if p.wire_format == "openai"]
MODEL = "sim-model-1"

# Two messages: 4 + 3 words, 4 + 5 words.
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the simulator"},
]
PROMPT_TOKENS = 16
PROMPT_WORDS = ["Say", "hello", "to", "the", "simulator"]


def expected_text(provider: str, model: str = MODEL) -> str:
    """The reply the documented rule promises for MESSAGES."""
    return f"Simulated reply from {provider}/{model}: " + " ".join(PROMPT_WORDS)


def fake_key(marker: str = "") -> str:
    """A throwaway key made at run time; `marker` ("invalid") makes the simulator reject it."""
    return f"sk-test-{marker}" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer() as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # One connection pool for the whole file: building a client (and its TLS context) per test costs
    # more than the calls themselves.
    with httpx.Client(timeout=5) as client:
        yield client


def client_for(sim: SimServer, http: httpx.Client, provider: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url(provider), api_key=key, max_retries=0, http_client=http)


def sse_payloads(body: bytes) -> list[bytes]:
    """The `data:` payloads of an OpenAI-style SSE body, checking the framing on the way.

    Comment frames (DeepSeek's ``: keep-alive``) carry no payload and are skipped.
    """
    assert body.endswith(b"\n\n")
    frames = [f for f in body[:-2].split(b"\n\n") if not f.startswith(b":")]
    assert all(frame.startswith(b"data: ") and b"\n" not in frame for frame in frames), frames
    return [frame[len(b"data: "):] for frame in frames]


def test_twelve_providers_speak_openai_format() -> None:
    assert len(OPENAI_FORMAT) == 12
    assert "anthropic" not in OPENAI_FORMAT and "gemini" not in OPENAI_FORMAT


@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_non_streaming_reply(sim: SimServer, http: httpx.Client, provider: str) -> None:
    client = client_for(sim, http, provider, fake_key())
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.message.content == expected_text(provider)
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.model == MODEL
    assert completion.usage is not None
    words = 4 + len(PROMPT_WORDS)
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        PROMPT_TOKENS, words, PROMPT_TOKENS + words)
    conformance.validate("CreateChatCompletionResponse", orjson.loads(raw.http_response.content))


@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_streaming_reply_with_usage(sim: SimServer, http: httpx.Client, provider: str) -> None:
    client = client_for(sim, http, provider, fake_key())
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(provider)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    words = 4 + len(PROMPT_WORDS)
    if provider == "moonshot":
        # Moonshot never sends a usage chunk: the usage is inside choices[0] of the finish chunk, which
        # the SDK keeps as an extra field (exact shapes: test_sim_usage.py).
        assert all(c.usage is None and c.choices for c in chunks)
        extra = chunks[-1].choices[0].model_extra or {}
        assert (extra["usage"]["prompt_tokens"], extra["usage"]["completion_tokens"]) == (
            PROMPT_TOKENS, words)
    else:
        # Usage arrives once, on a last chunk without choices; every earlier chunk says usage: null.
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert all(c.usage is None for c in chunks[:-1])
        usage = chunks[-1].usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
            PROMPT_TOKENS, words, PROMPT_TOKENS + words)
    # One content chunk per reply word: that is what completion_tokens counts.
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == words
    assert len({c.id for c in chunks}) == 1

    non_streamed = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert text == non_streamed.choices[0].message.content


@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_stream_chunks_conform_on_the_wire(sim: SimServer, http: httpx.Client, provider: str) -> None:
    conformance.pytest_skip_if_absent()
    for include_usage in (True, False):
        response = http.post(
            sim.base_url(provider) + "/chat/completions",
            headers={"Authorization": f"Bearer {fake_key()}"},
            json={"model": MODEL, "messages": MESSAGES, "stream": True,
                  "stream_options": {"include_usage": include_usage}},
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = sse_payloads(response.content)
        assert payloads[-1] == b"[DONE]"
        chunks = [orjson.loads(p) for p in payloads[:-1]]
        for chunk in chunks:
            conformance.validate("CreateChatCompletionStreamResponse", chunk)
        # Without include_usage there is no usage chunk and no `usage` key at all, as on OpenAI.
        # Moonshot never has either: its usage is inside choices[0] of the finish chunk.
        usage_chunk = include_usage and provider != "moonshot"
        assert all(("usage" in c) is usage_chunk for c in chunks)
        assert (chunks[-1]["choices"] == []) is usage_chunk


def test_max_tokens_cuts_the_reply(sim: SimServer, http: httpx.Client) -> None:
    for provider in OPENAI_FORMAT:
        client = client_for(sim, http, provider, fake_key())
        cut = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
        assert cut.choices[0].message.content == "Simulated reply from"
        assert cut.choices[0].finish_reason == "length"
        assert cut.usage is not None and cut.usage.completion_tokens == 3
        assert cut.usage.total_tokens == PROMPT_TOKENS + 3


def test_max_completion_tokens_wins_and_streams_cut(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "openai", fake_key())
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_completion_tokens=5, max_tokens=1, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Simulated reply from openai/sim-model-1: Say"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


@pytest.mark.parametrize("provider", [name for name in OPENAI_FORMAT
                                      if CATALOG.providers[name].limit_field == "max_tokens"])
def test_a_provider_that_reads_max_tokens_ignores_max_completion_tokens(
        sim: SimServer, http: httpx.Client, provider: str) -> None:
    # DeepSeek documents only max_tokens: a max_completion_tokens of 1 beside it limits nothing.
    client = client_for(sim, http, provider, fake_key())
    both = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=1,
                                          max_tokens=6)
    assert both.usage is not None and both.usage.completion_tokens == 6
    alone = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=1)
    assert alone.choices[0].message.content == expected_text(provider)
    assert alone.choices[0].finish_reason == "stop"


def test_a_limit_above_the_reply_length_stops_normally(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "mistral", fake_key())
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=500)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == expected_text("mistral")


def test_replies_are_deterministic_and_built_from_text_parts(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "qwen", fake_key())
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "first question here"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "forty two"},
        {"role": "user", "content": [
            {"type": "text", "text": "What  is"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
            {"type": "text", "text": "this?"},
        ]},
    ]
    first = client.chat.completions.create(model="qwen3-max", messages=messages)  # type: ignore[arg-type]
    second = client.chat.completions.create(model="qwen3-max", messages=messages)  # type: ignore[arg-type]
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content == "Simulated reply from qwen/qwen3-max: What is this?"
    # (4+3) + (4+0) + (4+2) + (4+3): the image part and the tool call add no words.
    assert first.usage is not None and first.usage.prompt_tokens == 24
    assert first.usage.completion_tokens == 7
    assert prompt_tokens(messages) == 24
    assert reply_words("qwen", "qwen3-max", messages) == ["Simulated", "reply", "from", "qwen/qwen3-max:",
                                                          "What", "is", "this?"]


@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_models_list(sim: SimServer, http: httpx.Client, provider: str) -> None:
    response = http.get(sim.base_url(provider) + "/models", headers={"Authorization": f"Bearer {fake_key()}"})
    assert response.status_code == 200
    body = response.json()
    catalog_ids = [m.id for m in CATALOG.models.values() if m.provider == provider]
    assert [m["id"] for m in body["data"]] == catalog_ids
    assert {m["owned_by"] for m in body["data"]} <= {provider}
    conformance.validate("ListModelsResponse", body)


# The bad-key answers of shared/providers.md §2, written out independently of alumia.sim.errors.
# A callable stands for a value that varies (a request id, a message quoting the masked key).
def _is_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


BAD_KEY: dict[str, tuple[int, dict[str, Any]]] = {
    "openai": (401, {"error": {"message": lambda m: m.startswith("Incorrect API key provided: sk-te****"),
                               "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}),
    "deepseek": (401, {"error": {
        "message": lambda m: m.startswith("Authentication Fails, Your api key: ****")
        and m.endswith(" is invalid"),
        "type": "authentication_error", "param": None, "code": "invalid_request_error"}}),
    "xai": (400, {"code": "Client specified an invalid argument",
                  "error": lambda m: m.startswith("Incorrect API key provided: sk***")}),
    "mistral": (401, {"detail": "Unauthorized"}),
    "minimax": (401, {"base_resp": {"status_code": 1004,
                                    "status_msg": lambda m: m.startswith("login fail")}}),
    "moonshot": (401, {"error": {"message": "Invalid Authentication",
                                 "type": "invalid_authentication_error"}}),
    "zhipu": (401, {"error": {"code": "1000", "message": _is_str}}),
    "xiaomi": (401, {"error": {"message": _is_str, "type": "invalid_request_error", "param": None,
                               "code": "401"}}),
    "nvidia": (401, {"type": "about:blank", "status": 401, "title": "Unauthorized", "detail": _is_str}),
    "qwen": (401, {"error": {"message": lambda m: m.startswith("Incorrect API key provided"),
                             "type": "invalid_request_error", "param": None, "code": "invalid_api_key"},
                   "request_id": _is_str}),
    "cerebras": (401, {"message": "Wrong API Key", "type": "invalid_request_error", "param": "api_key",
                       "code": "wrong_api_key"}),
    "groq": (401, {"error": {"message": "Invalid API Key", "type": "invalid_request_error",
                             "code": "invalid_api_key"}}),
}
# Where §2 documents a different answer to a request carrying no key at all.
MISSING_KEY: dict[str, tuple[int, dict[str, Any]]] = {
    "openai": (401, {"error": {"message": lambda m: m.startswith("You didn't provide an API key"),
                               "type": "invalid_request_error", "param": None, "code": None}}),
    "xai": (401, {"code": _is_str, "error": _is_str}),
    "zhipu": (401, {"error": {"code": "1001", "message": _is_str}}),
    "cerebras": (403, {"detail": "Not authenticated"}),
}


def matches(actual: object, expected: object) -> bool:
    """True when `actual` has exactly the shape of `expected`; callables in `expected` test a value."""
    if callable(expected):
        return bool(expected(actual))
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(matches(actual[k], v) for k, v in expected.items()))
    return actual == expected and type(actual) is type(expected)


def test_the_bad_key_table_covers_every_openai_format_provider() -> None:
    assert set(BAD_KEY) == set(OPENAI_FORMAT)


@pytest.mark.parametrize("endpoint", ["chat", "models"])
@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_bad_key_gets_the_providers_own_error(sim: SimServer, http: httpx.Client, provider: str,
                                              endpoint: str) -> None:
    key = fake_key("invalid-")
    headers = {"Authorization": f"Bearer {key}"}
    url = sim.base_url(provider) + ("/chat/completions" if endpoint == "chat" else "/models")
    if endpoint == "chat":
        response = http.post(url, headers=headers, json={"model": MODEL, "messages": MESSAGES})
    else:
        response = http.get(url, headers=headers)
    status, shape = BAD_KEY[provider]
    assert response.status_code == status
    body = response.json()
    assert matches(body, shape), body
    # Never the key, nor its secret random part.
    assert key not in response.text and key[-32:] not in response.text
    expected_type = "application/problem+json" if provider == "nvidia" else "application/json"
    assert response.headers["content-type"] == expected_type
    if provider == "openai":
        conformance.validate("ErrorResponse", body)


@pytest.mark.parametrize("provider", OPENAI_FORMAT)
def test_missing_key_gets_the_providers_own_error(sim: SimServer, http: httpx.Client, provider: str) -> None:
    response = http.get(sim.base_url(provider) + "/models")
    status, shape = MISSING_KEY.get(provider, BAD_KEY[provider])
    assert response.status_code == status
    assert matches(response.json(), shape), response.json()


@pytest.mark.parametrize(("provider", "error"), [("openai", openai.AuthenticationError),
                                                 ("xai", openai.BadRequestError)])
def test_openai_client_sees_a_bad_key_as_its_error(sim: SimServer, http: httpx.Client, provider: str,
                                                   error: type[openai.APIStatusError]) -> None:
    client = client_for(sim, http, provider, fake_key("invalid-"))
    with pytest.raises(error):
        client.models.list()


def test_xiaomi_also_takes_an_api_key_header(sim: SimServer, http: httpx.Client) -> None:
    headers = {"api-key": fake_key()}
    assert http.get(sim.base_url("xiaomi") + "/models", headers=headers).status_code == 200
    # Only xiaomi: groq sees no key at all.
    assert http.get(sim.base_url("groq") + "/models", headers=headers).status_code == 401


def test_calls_record_the_key_hash_never_the_key(sim: SimServer, http: httpx.Client) -> None:
    sim.reset()
    key, bad = fake_key(), fake_key("invalid-")
    client = client_for(sim, http, "groq", key)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    client.models.list()
    http.get(sim.base_url("zhipu") + "/models", headers={"Authorization": f"Bearer {bad}"})
    http.get(sim.base_url("cerebras") + "/models")

    calls = sim.calls()
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert [(c["provider"], c["model"], c["keySha256"], c["stream"], c["path"]) for c in calls] == [
        ("groq", MODEL, digest, False, "/groq/openai/v1/chat/completions"),
        ("groq", MODEL, digest, True, "/groq/openai/v1/chat/completions"),
        ("groq", None, digest, False, "/groq/openai/v1/models"),
        ("zhipu", None, hashlib.sha256(bad.encode()).hexdigest(), False, "/zhipu/api/paas/v4/models"),
        ("cerebras", None, None, False, "/cerebras/v1/models"),
    ]
    assert all(isinstance(c["time"], float) for c in calls)
    assert [c["time"] for c in calls] == sorted(c["time"] for c in calls)
    dumped = orjson.dumps(calls).decode()
    assert key not in dumped and bad not in dumped
    assert key[-32:] not in dumped and bad[-32:] not in dumped

    sim.reset()
    assert sim.calls() == []


@pytest.mark.parametrize("path", ["/nope/v1/models", "/openai/v1/messages", "/openai/v1/audio/speech",
                                  "/groq/v1/chat/completions", "/deepseek/v1/chat/completions/extra"])
def test_unknown_paths_get_a_json_404(sim: SimServer, http: httpx.Client, path: str) -> None:
    response = http.post(f"http://{sim.host}:{sim.port}{path}", json={})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"Invalid URL (POST {path})"


def test_a_malformed_request_gets_an_openai_error(sim: SimServer, http: httpx.Client) -> None:
    url = sim.base_url("openai") + "/chat/completions"
    headers = {"Authorization": f"Bearer {fake_key()}"}
    for body in ({"model": MODEL}, {"model": MODEL, "messages": MESSAGES, "max_tokens": 0},
                 {"messages": MESSAGES}, {"model": MODEL, "messages": MESSAGES, "stream_options": {}}):
        response = http.post(url, headers=headers, json=body)
        assert response.status_code == 400, body
        conformance.validate("ErrorResponse", response.json())
    assert http.post(url, headers=headers, content=b"{not json").status_code == 400


def test_conformance_rejects_what_it_should() -> None:
    conformance.pytest_skip_if_absent()
    good = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": None},
                         "finish_reason": "stop", "logprobs": None}]}
    conformance.validate("CreateChatCompletionResponse", good)
    without_choices = {k: v for k, v in good.items() if k != "choices"}
    with pytest.raises(conformance.ValidationError):
        conformance.validate("CreateChatCompletionResponse", without_choices)
    with pytest.raises(conformance.ValidationError):
        conformance.validate("CreateChatCompletionResponse", {**good, "object": "chat.completion.chunk"})
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
             "usage": None}
    # `usage` is `nullable: true` in the spec: accepted as null only thanks to the conversion...
    conformance.validate("CreateChatCompletionStreamResponse", chunk)
    with pytest.raises(conformance.ValidationError):
        conformance.validate("CreateChatCompletionStreamResponse", {**chunk, "usage": "none"})
    with pytest.raises(conformance.ValidationError):
        conformance.validate("ErrorResponse", {"error": {"message": "m", "type": "t"}})


def test_nullable_conversion() -> None:
    converted = conformance.to_json_schema(
        {"type": "object", "properties": {"a": {"type": "string", "enum": ["x"], "nullable": True},
                                          "nullable": {"type": "integer"},
                                          "n": {"type": "number", "minimum": 0, "exclusiveMinimum": True}}})
    validator = Draft202012Validator(converted)
    assert validator.is_valid({"a": None, "nullable": 3, "n": 0.5})
    assert validator.is_valid({"a": "x"})
    assert not validator.is_valid({"a": "y"})
    assert not validator.is_valid({"nullable": None})
    assert not validator.is_valid({"n": 0})
    # ...and without it a plain validator rejects the null OpenAI sends.
    assert not Draft202012Validator({"type": "string", "nullable": True}).is_valid(None)


def test_sim_env_points_every_provider_at_the_simulator() -> None:
    env = sim_env("127.0.0.1", 8790)
    assert len(env) == 2 * len(PROVIDER_NAMES) == 28
    assert env["ALUMIA_BASE_URL_GROQ"] == "http://127.0.0.1:8790/groq/openai/v1"
    assert env["ALUMIA_BASE_URL_DEEPSEEK"] == "http://127.0.0.1:8790/deepseek"
    assert env["ALUMIA_BASE_URL_ZHIPU"] == "http://127.0.0.1:8790/zhipu/api/paas/v4"
    assert env["ALUMIA_BASE_URL_OPENAI"] == "http://127.0.0.1:8790/openai/v1"
    assert env["ALUMIA_BASE_URL_ANTHROPIC"] == "http://127.0.0.1:8790/anthropic/v1"
    assert env["ALUMIA_BASE_URL_GEMINI"] == "http://127.0.0.1:8790/gemini/v1beta"
    keys = [v for k, v in env.items() if k.startswith("ALUMIA_PLATFORM_KEY_")]
    assert len(set(keys)) == 14 and not any("invalid" in k for k in keys)
    assert env["ALUMIA_PLATFORM_KEY_XAI"].startswith("sim-platform-xai-")
    # Fresh keys on every call: none is fixed anywhere.
    assert sim_env("127.0.0.1", 8790)["ALUMIA_PLATFORM_KEY_XAI"] != env["ALUMIA_PLATFORM_KEY_XAI"]
    assert sim_base_url("::1", 9, "mistral") == "http://[::1]:9/mistral/v1"


def test_platform_keys_from_sim_env_are_accepted(sim: SimServer, http: httpx.Client) -> None:
    env = sim_env(sim.host, sim.port)
    check: Callable[[str], int] = lambda p: http.get(  # noqa: E731
        env[f"ALUMIA_BASE_URL_{p.upper()}"] + "/models",
        headers={"Authorization": f"Bearer {env[f'ALUMIA_PLATFORM_KEY_{p.upper()}']}"}).status_code
    assert all(check(p) == 200 for p in OPENAI_FORMAT)


# --- forced tool calls --------------------------------------------------------------------------------

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 3},
        "note": {"type": "string"},
    },
    "required": ["city", "unit", "days"],
}
# Only the required properties; `days` raised to its minimum.
WEATHER_ARGS = '{"city": "sim", "unit": "celsius", "days": 3}'  # 6 words
SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "q": {"type": "string"},
        "n": {"type": "number"},
        "flags": {"type": "array", "items": {"type": "boolean"}},
        "opts": {"type": "object", "properties": {"deep": {"type": "boolean"}}},
    },
}
# Nothing required: every property, recursively.
SEARCH_ARGS = '{"q": "sim", "n": 1.5, "flags": [true], "opts": {"deep": true}}'  # 9 words
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
    {"type": "function",
     "function": {"name": "search", "description": "Search", "parameters": SEARCH_SCHEMA}},
]
FORCED = [("required", "get_weather", WEATHER_ARGS, 6),
          ({"type": "function", "function": {"name": "search"}}, "search", SEARCH_ARGS, 9)]


@pytest.mark.parametrize(("choice", "name", "arguments", "tokens"), FORCED)
@pytest.mark.parametrize("provider", ["openai", "groq"])
def test_forced_tool_call(sim: SimServer, http: httpx.Client, provider: str, choice: Any, name: str,
                          arguments: str, tokens: int) -> None:
    client = client_for(sim, http, provider, fake_key())
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, tools=TOOLS,
                                                           tool_choice=choice, max_tokens=2)
    completion = raw.parse()
    choice0 = completion.choices[0]
    assert choice0.finish_reason == "tool_calls"
    assert choice0.message.content is None
    assert choice0.message.tool_calls is not None and len(choice0.message.tool_calls) == 1
    call = choice0.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == name and call.function.arguments == arguments
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)
    Draft202012Validator(schema).validate(orjson.loads(call.function.arguments))
    # The output limit (2) does not cut a tool call; its tokens are the words of the arguments.
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (PROMPT_TOKENS, tokens)
    conformance.validate("CreateChatCompletionResponse", orjson.loads(raw.http_response.content))


@pytest.mark.parametrize(("choice", "name", "arguments", "tokens"), FORCED)
def test_forced_tool_call_streams(sim: SimServer, http: httpx.Client, choice: Any, name: str,
                                  arguments: str, tokens: int) -> None:
    response = http.post(sim.base_url("mistral") + "/chat/completions",
                         headers={"Authorization": f"Bearer {fake_key()}"},
                         json={"model": MODEL, "messages": MESSAGES, "tools": TOOLS, "tool_choice": choice,
                               "stream": True, "stream_options": {"include_usage": True}})
    payloads = sse_payloads(response.content)
    assert payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        conformance.validate("CreateChatCompletionStreamResponse", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    first = deltas[0]["tool_calls"][0]
    assert first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": name, "arguments": ""}
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:] if "tool_calls" in d]
    assert len(fragments) == 2 and "".join(fragments) == arguments
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == tokens

    # The SDK puts the fragments back together.
    client = client_for(sim, http, "mistral", fake_key())
    streamed = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS,
                                                   tool_choice=choice, stream=True))
    calls = [tc for c in streamed if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function is not None and calls[0].function.name == name
    assert "".join(tc.function.arguments or "" for tc in calls if tc.function) == arguments


def test_tool_choice_auto_gets_text(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "openai", fake_key())
    for choice in ("auto", "none"):
        completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS,
                                                    tool_choice=choice)
        assert completion.choices[0].message.content == expected_text("openai")
        assert completion.choices[0].message.tool_calls is None
        assert completion.choices[0].finish_reason == "stop"


def test_a_forced_choice_needs_the_tool(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "openai", fake_key())
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, tool_choice="required")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})


def test_tool_arguments_follow_the_schema() -> None:
    schema = {
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number", "exclusiveMinimum": 2}},
                            "required": ["x"]}},
        "properties": {
            "where": {"$ref": "#/$defs/Point"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "maximum": 0}]},
            "tags": {"type": ["array", "null"], "items": {"type": "string", "minLength": 5}, "minItems": 2},
            "kind": {"const": "fixed"},
            "upper": {"type": "STRING"},
            "short": {"type": "string", "maxLength": 2},
            "free": {},
        },
    }
    args = build_arguments(schema)
    assert args == {"where": {"x": 2.5}, "maybe": 0, "tags": ["simsi", "simsi"], "kind": "fixed",
                    "upper": "sim", "short": "si", "free": "sim"}
    assert build_arguments(None) == {} and build_arguments({"type": "string"}) == {}
    text = ('{"where": {"x": 2.5}, "maybe": 0, "tags": ["simsi", "simsi"], "kind": "fixed", "upper": "sim", '
            '"short": "si", "free": "sim"}')
    assert ToolCall("f", args).arguments_json == text
    # The tokens are the words of that JSON: 16 of them.
    assert ToolCall("f", args).tokens == 16


# --- scripted faults ----------------------------------------------------------------------------------

def with_directive(directive: str) -> list[dict[str, Any]]:
    """MESSAGES with `directive` inside the last user message."""
    return [MESSAGES[0], {"role": "user", "content": f"Say hello {directive} to the simulator"}]


def test_fault_429_is_a_rate_limit_with_retry_after(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "groq", fake_key())
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=with_directive("[[sim:status=429]]"))
    assert info.value.response.headers["retry-after"] == "1"
    body = info.value.response.json()
    assert body["error"]["type"] == "requests" and body["error"]["code"] == "rate_limit_exceeded"
    conformance.validate("ErrorResponse", body)


@pytest.mark.parametrize(("status", "error"), [(503, openai.InternalServerError),
                                               (529, openai.APIStatusError), (400, openai.BadRequestError)])
def test_status_faults(sim: SimServer, http: httpx.Client, status: int,
                       error: type[openai.APIStatusError]) -> None:
    client = client_for(sim, http, "mistral", fake_key())
    with pytest.raises(error) as info:
        client.chat.completions.create(model=MODEL, messages=with_directive(f"[[sim:status={status}]]"),
                                       stream=True)
    assert info.value.status_code == status
    assert "retry-after" not in info.value.response.headers
    assert info.value.response.json()["error"]["type"] == ("invalid_request_error" if status < 500
                                                           else "server_error")


def test_the_key_is_checked_before_faults(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "openai", fake_key("invalid-"))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=with_directive("[[sim:status=429]]"))


def test_directives_are_removed_before_echoing_and_counting(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "deepseek", fake_key())
    completion = client.chat.completions.create(
        model=MODEL, messages=with_directive("[[sim:delay_ms=1]][[sim:cut_after=3]]"))
    assert completion.choices[0].message.content == expected_text("deepseek")
    assert completion.usage is not None and completion.usage.prompt_tokens == PROMPT_TOKENS
    # In a list of parts too, and glued to a word it still separates it.
    parts = [MESSAGES[0], {"role": "user", "content": [
        {"type": "text", "text": "Say hello[[sim:no_usage]]to"}, {"type": "text", "text": "the simulator"}]}]
    assert client.chat.completions.create(model=MODEL, messages=parts).choices[0].message.content == (
        expected_text("deepseek"))


def test_cut_after_drops_the_stream(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "deepseek", fake_key())
    seen: list[str] = []
    # What really happens: the SDK yields the chunks it got, then raises APIConnectionError.
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
                model=MODEL, messages=with_directive("[[sim:cut_after=2]]"), stream=True):
            seen.append(chunk.choices[0].delta.content or "")
    assert seen == ["", "Simulated"]

    received = b""
    with http.stream("POST", sim.base_url("deepseek") + "/chat/completions",
                     headers={"Authorization": f"Bearer {fake_key()}"},
                     json={"model": MODEL, "messages": with_directive("[[sim:cut_after=100]]"),
                           "stream": True}) as response, pytest.raises(httpx.RemoteProtocolError):
        for piece in response.iter_raw():
            received += piece
    payloads = sse_payloads(received)
    # Everything but [DONE]: the finish chunk arrived, the proper end did not.
    assert b"[DONE]" not in payloads and orjson.loads(payloads[-1])["choices"][0]["finish_reason"] == "stop"


def test_no_usage_drops_usage_everywhere(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "xai", fake_key())
    completion = client.chat.completions.create(model=MODEL, messages=with_directive("[[sim:no_usage]]"))
    assert completion.usage is None
    chunks = list(client.chat.completions.create(model=MODEL, messages=with_directive("[[sim:no_usage]]"),
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.usage is None and c.choices for c in chunks)
    raw = http.post(sim.base_url("xai") + "/chat/completions",
                    headers={"Authorization": f"Bearer {fake_key()}"},
                    json={"model": MODEL, "messages": with_directive("[[sim:no_usage]]"), "stream": True,
                          "stream_options": {"include_usage": True}})
    assert all(b'"usage"' not in p for p in sse_payloads(raw.content))


def test_delay_and_several_faults(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "cerebras", fake_key())
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL,
                                       messages=with_directive("[[sim: delay_ms=200 ; status=500 ]]"))
    assert time.monotonic() - started >= 0.2


def test_bad_directives_are_rejected() -> None:
    assert parse_faults("no directive here") == Faults()
    assert parse_faults("[[sim:status=503;no_usage]] x [[sim:status=429;cut_after=0]]") == Faults(
        status=429, cut_after=0, no_usage=True)
    assert parse_faults("[[sim:cached=3;reasoning=5]][[sim: cache_write = 2 ;cached=4]]") == Faults(
        cached=4, cache_write=2, reasoning=5)
    for bad in ("[[sim:status=200]]", "[[sim:status=abc]]", "[[sim:delay_ms=-1]]", "[[sim:boom]]",
                "[[sim:no_usage=1]]", "[[sim:cut_after]]", "[[sim:cached=-1]]", "[[sim:cached]]",
                "[[sim:reasoning=x]]", "[[sim:cache_write=1.5]]", "[[sim:cached=99999999999]]"):
        with pytest.raises(FaultError):
            parse_faults(bad)
    assert strip_directives("a[[sim:no_usage]]b") == "a b"


def test_an_unknown_directive_is_a_bad_request(sim: SimServer, http: httpx.Client) -> None:
    client = client_for(sim, http, "qwen", fake_key())
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=with_directive("[[sim:status=teapot]]"))
    assert "status" in info.value.response.json()["error"]["message"]

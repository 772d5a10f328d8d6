"""The simulator's `n`, its limit field per provider, what `/_sim/calls` records as received, and usage
left out or partial on non-streamed answers in all three formats, over real HTTP.

Expected texts and counts are written out by hand from the rules in `alumia.sim.openai_format`: the
prompt is P = 16 tokens (system 4 + 3 words, user 4 + 5 words) and each choice's reply C = 9 words;
choice k (from the second on) names itself as ``{provider}/{model}#k:``, the same number of words.
"""

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from alumia.domain.catalog import load_catalog
from alumia.sim.server import SimServer

import conformance

CATALOG = load_catalog()
N_PROVIDERS = [name for name, p in CATALOG.providers.items() if p.wire_format == "openai" and p.supports_n]
NO_N_PROVIDERS = [name for name, p in CATALOG.providers.items()
                  if p.wire_format == "openai" and not p.supports_n]
MODEL = "sim-model-1"
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the simulator"},
]
P, C = 16, 9
ECHO = "Say hello to the simulator"


def text(provider: str, choice: int) -> str:
    mark = f"#{choice + 1}" if choice else ""
    return f"Simulated reply from {provider}/{MODEL}{mark}: {ECHO}"


def fake_key() -> str:
    return "sk-test-" + secrets.token_hex(20)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def post(sim: SimServer, http: httpx.Client, provider: str, body: dict[str, Any] | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(
        {"model": MODEL, "messages": MESSAGES, **body})
    return http.post(sim.base_url(provider) + "/chat/completions", content=content,
                     headers={"Authorization": f"Bearer {fake_key()}", "Content-Type": "application/json"})


def test_the_providers_that_honour_n() -> None:
    assert N_PROVIDERS == ["openai", "xai", "mistral", "moonshot"]


@pytest.mark.parametrize("provider", N_PROVIDERS)
def test_n_choices_each_with_its_own_text_and_usage_counting_all(sim: SimServer, http: httpx.Client,
                                                                 provider: str) -> None:
    body = post(sim, http, provider, {"n": 3}).json()
    conformance.validate("CreateChatCompletionResponse", body)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in body["choices"]] == [text(provider, k) for k in range(3)]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop"] * 3
    assert body["usage"]["prompt_tokens"] == P
    assert body["usage"]["completion_tokens"] == 3 * C
    assert body["usage"]["total_tokens"] == P + 3 * C


def test_the_limit_cuts_every_choice(sim: SimServer, http: httpx.Client) -> None:
    client = openai.OpenAI(base_url=sim.base_url("openai"), api_key=fake_key(), max_retries=0,
                           http_client=http)
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, max_completion_tokens=5)
    assert [c.message.content for c in completion.choices] == [
        f"Simulated reply from openai/{MODEL}: Say", f"Simulated reply from openai/{MODEL}#2: Say"]
    assert [c.finish_reason for c in completion.choices] == ["length", "length"]
    assert completion.usage is not None and completion.usage.completion_tokens == 10


@pytest.mark.parametrize("provider", N_PROVIDERS)
def test_n_choices_stream_with_an_index_each(sim: SimServer, http: httpx.Client, provider: str) -> None:
    response = post(sim, http, provider, {"n": 2, "stream": True, "stream_options": {"include_usage": True}})
    frames = [f for f in response.content.removesuffix(b"\n\n").split(b"\n\n") if not f.startswith(b":")]
    assert frames[-1] == b"data: [DONE]"
    chunks = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]
    for chunk in chunks:
        conformance.validate("CreateChatCompletionStreamResponse", chunk)
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (choice["delta"].get("content") or "")
            if choice["finish_reason"]:
                finishes[choice["index"]] = choice["finish_reason"]
    assert texts == {0: text(provider, 0), 1: text(provider, 1)}
    assert finishes == {0: "stop", 1: "stop"}
    usage = (chunks[-1]["choices"][0]["usage"] if provider == "moonshot" else chunks[-1]["usage"])
    assert usage["prompt_tokens"] == P and usage["completion_tokens"] == 2 * C


@pytest.mark.parametrize("provider", NO_N_PROVIDERS)
def test_a_provider_without_n_refuses_more_than_one(sim: SimServer, http: httpx.Client,
                                                    provider: str) -> None:
    response = post(sim, http, provider, {"n": 2})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "n" and error["code"] == "invalid_value"
    one = post(sim, http, provider, {"n": 1}).json()
    assert [c["message"]["content"] for c in one["choices"]] == [text(provider, 0)]


@pytest.mark.parametrize("n", [0, -1, 129, "2", 1.5, True])
def test_a_bad_n_is_a_bad_request(sim: SimServer, http: httpx.Client, n: object) -> None:
    response = post(sim, http, "openai", {"n": n})
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"


def test_calls_record_every_model_of_a_body_and_the_limit_fields(sim: SimServer, http: httpx.Client) -> None:
    sim.reset()
    raw = (b'{"model":"gpt-5.6-sol","model":"gpt-5.6-luna","messages":[{"role":"user","content":"hi"}],'
           b'"max_completion_tokens":1,"max_tokens":2064,"n":2}')
    post(sim, http, "openai", raw)
    post(sim, http, "deepseek", {"max_tokens": 7})
    [dup, plain] = sim.calls()
    assert dup["model"] == "gpt-5.6-luna"
    assert dup["received"] == {"models": ["gpt-5.6-sol", "gpt-5.6-luna"], "max_completion_tokens": 1,
                               "max_tokens": 2064, "n": 2}
    assert plain["received"] == {"models": [MODEL], "max_tokens": 7}


def test_anthropic_and_gemini_calls_record_their_limit(sim: SimServer, http: httpx.Client) -> None:
    sim.reset()
    http.post(sim.base_url("anthropic") + "/messages",
              headers={"anthropic-version": "2023-06-01", "x-api-key": fake_key()},
              json={"model": "claude-sonnet-5", "max_tokens": 12,
                    "messages": [{"role": "user", "content": "hi"}]})
    http.post(sim.base_url("gemini") + "/models/gemini-3.5-flash:generateContent",
              headers={"x-goog-api-key": "AIza-test-" + secrets.token_hex(16)},
              json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                    "generationConfig": {"maxOutputTokens": 34}})
    [anthropic, gemini] = sim.calls()
    assert anthropic["received"] == {"models": ["claude-sonnet-5"], "max_tokens": 12}
    assert gemini["received"] == {"maxOutputTokens": 34}


# --- usage missing or partial, not streamed, in the three formats ---------------------------------------


def with_directive(directive: str) -> list[dict[str, Any]]:
    return [MESSAGES[0], {"role": "user", "content": f"{ECHO} [[sim:{directive}]]"}]


@pytest.mark.parametrize(("directive", "usage"), [
    ("no_usage", None), ("partial_usage", {"prompt_tokens": P, "total_tokens": P + C}),
    ("no_usage;partial_usage", None)])
@pytest.mark.parametrize("provider", ["openai", "deepseek", "moonshot", "groq", "cerebras"])
def test_openai_format_usage_missing_or_partial(sim: SimServer, http: httpx.Client, provider: str,
                                                directive: str, usage: dict | None) -> None:
    body = post(sim, http, provider, {"messages": with_directive(directive)}).json()
    assert body.get("usage") == usage
    assert ("time_info" in body) == (provider == "cerebras" and usage is not None)
    assert body["choices"][0]["message"]["content"] == text(provider, 0)


@pytest.mark.parametrize(("directive", "usage"), [("no_usage", None), ("partial_usage", {"input_tokens": P})])
def test_anthropic_usage_missing_or_partial(sim: SimServer, http: httpx.Client, directive: str,
                                            usage: dict | None) -> None:
    body = http.post(sim.base_url("anthropic") + "/messages",
                     headers={"anthropic-version": "2023-06-01", "x-api-key": fake_key()},
                     json={"model": "claude-sonnet-5", "max_tokens": 100, "system": MESSAGES[0]["content"],
                           "messages": [with_directive(directive)[1]]}).json()
    assert body.get("usage") == usage
    assert body["content"] == [{"type": "text",
                                "text": f"Simulated reply from anthropic/claude-sonnet-5: {ECHO}"}]


@pytest.mark.parametrize(("directive", "usage"), [
    ("no_usage", None), ("partial_usage", {"promptTokenCount": P, "totalTokenCount": P + C})])
def test_gemini_usage_missing_or_partial(sim: SimServer, http: httpx.Client, directive: str,
                                         usage: dict | None) -> None:
    body = http.post(sim.base_url("gemini") + "/models/gemini-3.5-flash:generateContent",
                     headers={"x-goog-api-key": "AIza-test-" + secrets.token_hex(16)},
                     json={"systemInstruction": {"parts": [{"text": MESSAGES[0]["content"]}]},
                           "contents": [{"role": "user", "parts": [
                               {"text": with_directive(directive)[1]["content"]}]}]}).json()
    assert body.get("usageMetadata") == usage
    assert body["candidates"][0]["content"]["parts"] == [
        {"text": f"Simulated reply from gemini/gemini-3.5-flash: {ECHO}"}]

"""A seeded body fuzzer for POST /v1/chat/completions and /v1/messages over the three wire formats.

Each example starts from a good request (tools, tool calls, content parts, stop, ...) and mutates it:
a value anywhere in the body replaced by any JSON (wrong types, nulls, deep nesting), a key removed, or
a known field added with any value. Whatever the body, the answer is never a 5xx; an error is JSON in
the documented shape (OpenAI's on /v1/chat/completions, Anthropic's on /v1/messages); a stream ends
cleanly; and the server logs no traceback. Derandomized (hypothesis's fixed seed) and bounded: the
same bodies on every run.
"""

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conformance
from harness import Org, Server

MODELS = ["gpt-5.6-luna", "claude-haiku-4-5", "gemini-3.5-flash"]
EXAMPLES = 200

CHAT = {
    "max_tokens": 16,
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
        {"role": "user", "content": "go on"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "a tool",
                                                "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "stop": ["END"],
    "temperature": 0.5,
    "top_p": 1,
    "n": 1,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "user": "u-1",
}
CHAT_FIELDS = ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n",
               "tools", "tool_choice", "stop", "temperature", "top_p", "seed", "response_format", "user",
               "metadata", "parallel_tool_calls", "logprobs", "safety_identifier", "frequency_penalty"]

MESSAGES = {
    "max_tokens": 16,
    "system": [{"type": "text", "text": "be brief"}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
            {"type": "text", "text": "go on"}]},
    ],
    "tools": [{"name": "f", "description": "a tool", "input_schema": {"type": "object", "properties": {}}}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "metadata": {"user_id": "u-1"},
}
MESSAGES_FIELDS = ["model", "messages", "system", "stream", "max_tokens", "tools", "tool_choice",
                   "stop_sequences", "temperature", "top_p", "top_k", "metadata", "thinking"]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)


def paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every place in a JSON value, as a tuple of keys and indexes."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, inner in items:
        yield (*prefix, key)
        yield from paths(inner, (*prefix, key))


def mutated(base: dict, mutations: list[tuple[str, tuple, Any]]) -> dict:
    body = copy.deepcopy(base)
    for kind, path, value in mutations:
        parent: Any = body
        for key in path[:-1]:
            try:
                parent = parent[key]
            except (KeyError, IndexError, TypeError):
                break
        else:
            key = path[-1]
            fits = key in parent if isinstance(parent, dict) else \
                isinstance(parent, list) and isinstance(key, int) and key < len(parent)
            if kind == "set" and (fits or (isinstance(parent, dict) and isinstance(key, str))):
                parent[key] = value
            elif kind == "delete" and fits:
                del parent[key]
    return body


def good(base: dict, model: str, stream: bool) -> dict:
    """The base body for a model; streamed, it asks for usage (OpenAI refuses stream_options otherwise).

    Gemini has no control over parallel tool calls, so a Messages body asking to disable them is
    refused there (test_messages_front_door.py); its good body leaves the request out.
    """
    extra = {"stream_options": {"include_usage": True}} if stream and "n" in base else {}
    body = {**base, "model": model, "stream": stream, **extra}
    if model.startswith("gemini") and "disable_parallel_tool_use" in base.get("tool_choice", {}):
        body["tool_choice"] = {"type": "auto"}
    return body


def bodies(base: dict, fields: list[str]) -> st.SearchStrategy[dict]:
    """A good body for one of the models, streamed or not, with one to three mutations."""
    places = st.sampled_from(sorted(paths(base), key=repr))
    mutation = st.one_of(
        st.tuples(st.just("set"), places, JSON),
        st.tuples(st.just("delete"), places, st.none()),
        st.tuples(st.just("set"), st.sampled_from(fields).map(lambda name: (name,)), JSON))
    start = st.builds(lambda model, stream: good(base, model, stream), st.sampled_from(MODELS), st.booleans())
    return st.builds(lambda body, changes: mutated(body, changes), start,
                     st.lists(mutation, min_size=1, max_size=3))


@pytest.fixture(scope="module")
async def org(server: Server) -> Org:
    # $1,000 so that no mutation of the output limit is refused for the balance before it is parsed.
    return await server.new_org(deposit_cents=100_000)


def check_openai_error(response: httpx.Response) -> None:
    body = response.json()
    conformance.validate("ErrorResponse", body)
    assert response.headers["x-alumia-request-id"].startswith("req_")


def check_anthropic_error(response: httpx.Response) -> None:
    body = response.json()
    assert body["type"] == "error" and body["request_id"].startswith("req_"), body
    assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str), body


@pytest.fixture(scope="module")
def client(server: Server, org: Org) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {org.key}"}) as http:
        yield http


def post(client: httpx.Client, path: str, body: dict) -> tuple[httpx.Response, bytes]:
    with client.stream("POST", path, content=orjson.dumps(body),
                       headers={"Content-Type": "application/json"}) as response:
        return response, response.read()  # a stream cut by a crash raises here


def check(client: httpx.Client, path: str, body: dict) -> None:
    response, raw = post(client, path, body)
    assert response.status_code < 500, (response.status_code, raw[:300], body)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), raw[:300]
        (check_openai_error if path == "/v1/chat/completions" else check_anthropic_error)(response)
    elif response.headers["content-type"].startswith("application/json"):
        orjson.loads(raw)
    else:
        end = b"data: [DONE]" if path == "/v1/chat/completions" else b"event: message_stop"
        assert end in raw or b'"error"' in raw, (raw[-300:], body)


FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@pytest.mark.parametrize(("path", "base"), [("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)],
                         ids=["chat-completions", "messages"])
def test_the_unmutated_bodies_are_answered(client: httpx.Client, path: str, base: dict) -> None:
    for model in MODELS:
        for stream in (False, True):
            response, raw = post(client, path, good(base, model, stream))
            assert response.status_code == 200, (model, stream, raw[:300])


def test_mutated_chat_bodies_never_get_a_5xx(server: Server, client: httpx.Client) -> None:
    logged = len(server.log_text())

    @FUZZ
    @given(bodies(CHAT, CHAT_FIELDS))
    def fuzz(body: dict) -> None:
        check(client, "/v1/chat/completions", body)

    fuzz()
    assert "Traceback" not in server.log_text()[logged:]


def test_mutated_messages_bodies_never_get_a_5xx(server: Server, client: httpx.Client) -> None:
    logged = len(server.log_text())

    @FUZZ
    @given(bodies(MESSAGES, MESSAGES_FIELDS))
    def fuzz(body: dict) -> None:
        check(client, "/v1/messages", body)

    fuzz()
    assert "Traceback" not in server.log_text()[logged:]

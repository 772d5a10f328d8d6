"""The simulated Anthropic Messages API over real HTTP, driven by the official `anthropic` SDK.

Expected texts and token counts are worked out by hand from the rule in `alumia.sim.anthropic_format`
(the OpenAI-format rule plus the system prompt as one more message), not by calling it.

The SDK takes the host root plus the provider's prefix as its base URL and appends ``/v1/messages``:
``anthropic.Anthropic(base_url="http://127.0.0.1:PORT/anthropic")``. It sends the key as
``Authorization: Bearer``; the gateway sends ``x-api-key``; the simulator takes both.
"""

import hashlib
import secrets
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import orjson
import pytest
from jsonschema import Draft202012Validator

from alumia.domain.catalog import load_catalog
from alumia.sim.server import SimServer

MODEL = "claude-sonnet-5"
SYSTEM = "You are a terse assistant."  # 4 + 5 = 9
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "What is the capital of France?"},  # 4 + 6 = 10
    {"role": "assistant", "content": "Paris."},  # 4 + 1 = 5
    {"role": "user", "content": "And of Italy, please?"},  # 4 + 4 = 8
]
INPUT_TOKENS = 9 + 10 + 5 + 8
REPLY = f"Simulated reply from anthropic/{MODEL}: And of Italy, please?"
OUTPUT_TOKENS = 4 + 4

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
WEATHER_INPUT = {"city": "sim", "unit": "celsius", "days": 3}
# '{"city": "sim", "unit": "celsius", "days": 3}' splits into 6 words.
WEATHER_TOKENS = 6
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
SEARCH_INPUT = {"q": "sim", "n": 1.5, "flags": [True], "opts": {"deep": True}}
# '{"q": "sim", "n": 1.5, "flags": [true], "opts": {"deep": true}}' splits into 9 words.
SEARCH_TOKENS = 9
TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER_SCHEMA},
    {"name": "search", "description": "Search", "input_schema": SEARCH_SCHEMA},
]


def fake_key(marker: str = "") -> str:
    """A throwaway key made at run time; `marker` ("invalid") makes the simulator reject it."""
    return f"sk-ant-test-{marker}" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def http2() -> Iterator[httpx2.Client]:
    # The SDK's own transport, shared so each test does not build a client and its TLS context.
    with httpx2.Client(timeout=5) as client:
        yield client


def sdk_base_url(sim: SimServer) -> str:
    return f"http://127.0.0.1:{sim.port}/anthropic"


def client_for(sim: SimServer, http2: httpx2.Client, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sdk_base_url(sim), api_key=key or fake_key(), max_retries=0,
                               http_client=http2)


def headers_for(key: str | None = None, version: str | None = "2023-06-01") -> dict[str, str]:
    headers = {"x-api-key": key or fake_key()}
    if version:
        headers["anthropic-version"] = version
    return headers


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of an Anthropic SSE body, checking the framing on the way."""
    assert body.endswith(b"\n\n")
    events = []
    for frame in body[:-2].split(b"\n\n"):
        event_line, data_line = frame.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: "), frame
        name, data = event_line[len(b"event: "):].decode(), orjson.loads(data_line[len(b"data: "):])
        assert data["type"] == name
        events.append((name, data))
    return events


def read_until_cut(http: httpx.Client, url: str, headers: dict[str, str], body: dict[str, Any]) -> bytes:
    """The bytes of a streamed answer received before the connection dropped; fails if it did not drop."""
    received = b""
    with http.stream("POST", url, headers=headers, json=body) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                received += chunk
    return received


def with_directive(directive: str) -> list[dict[str, Any]]:
    """MESSAGES with `directive` appended to the last user message."""
    return [*MESSAGES[:-1], {"role": "user", "content": f"{MESSAGES[-1]['content']} {directive}"}]


def test_sdk_base_url_is_the_sim_base_without_v1(sim: SimServer) -> None:
    assert sim.base_url("anthropic") == sdk_base_url(sim) + "/v1"


def test_non_streaming_reply(sim: SimServer, http2: httpx2.Client) -> None:
    client = client_for(sim, http2)
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=1024, system=SYSTEM,
                                                   messages=MESSAGES)
    message = raw.parse()
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == REPLY
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.role == "assistant" and message.type == "message" and message.model == MODEL
    assert message.id.startswith("msg_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    assert (message.usage.cache_creation_input_tokens, message.usage.cache_read_input_tokens) == (0, 0)
    body = orjson.loads(raw.http_response.content)
    assert set(body) == {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    assert body["usage"] == {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def test_text_blocks_and_no_system(sim: SimServer, http2: httpx2.Client) -> None:
    client = client_for(sim, http2)
    messages: list[dict[str, Any]] = [{"role": "user", "content": [
        {"type": "text", "text": "Describe  this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
        {"type": "text", "text": "picture"},
    ]}]
    message = client.messages.create(model="claude-haiku-4-5", max_tokens=50,
                                     messages=messages)
    assert message.content[0].text == (
        "Simulated reply from anthropic/claude-haiku-4-5: Describe this picture")
    # One message of 3 text words, no system prompt; the image adds nothing.
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4 + 3, 4 + 3)
    # A system prompt given as text blocks counts like a string one.
    with_system = client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=messages,
                                         system=[{"type": "text", "text": "Be brief."}])
    assert with_system.usage.input_tokens == 7 + (4 + 2)


def test_max_tokens_cuts_the_reply(sim: SimServer, http2: httpx2.Client) -> None:
    message = client_for(sim, http2).messages.create(model=MODEL, max_tokens=3, system=SYSTEM,
                                                     messages=MESSAGES)
    assert message.content[0].text == "Simulated reply from"
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (INPUT_TOKENS, 3)


def test_streaming_with_the_stream_helper(sim: SimServer, http2: httpx2.Client) -> None:
    client = client_for(sim, http2)
    with client.messages.stream(model=MODEL, max_tokens=1024, system=SYSTEM,
                                messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY
    assert final.content[0].text == REPLY
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)


def test_streaming_events_on_the_wire(sim: SimServer, http: httpx.Client) -> None:
    response = http.post(sim.base_url("anthropic") + "/messages", headers=headers_for(),
                         json={"model": MODEL, "max_tokens": 1024, "system": SYSTEM, "messages": MESSAGES,
                               "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping",
                     *["content_block_delta"] * OUTPUT_TOKENS,
                     "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == MODEL
    assert start["usage"] == {"input_tokens": INPUT_TOKENS, "output_tokens": 1,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert events[1][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == REPLY
    assert events[-2][1] == {"type": "message_delta",
                             "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": OUTPUT_TOKENS}}


def test_create_with_stream_true(sim: SimServer, http2: httpx2.Client) -> None:
    client = client_for(sim, http2)
    events = list(client.messages.create(model=MODEL, max_tokens=5, system=SYSTEM, messages=MESSAGES,
                                         stream=True))
    # The SDK drops the ping.
    assert [e.type for e in events] == ["message_start", "content_block_start", *["content_block_delta"] * 5,
                                        "content_block_stop", "message_delta", "message_stop"]
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "max_tokens" and delta.usage.output_tokens == 5


@pytest.mark.parametrize(("choice", "name", "expected", "tokens"), [
    ({"type": "any"}, "get_weather", WEATHER_INPUT, WEATHER_TOKENS),
    ({"type": "tool", "name": "search"}, "search", SEARCH_INPUT, SEARCH_TOKENS),
])
def test_forced_tool_use(sim: SimServer, http2: httpx2.Client, choice: dict[str, Any], name: str,
                         expected: dict[str, Any], tokens: int) -> None:
    client = client_for(sim, http2)
    message = client.messages.create(model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES,
                                     tools=TOOLS, tool_choice=choice)
    assert message.stop_reason == "tool_use"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "tool_use" and block.name == name and block.id.startswith("toolu_")
    assert block.input == expected
    schema = next(t["input_schema"] for t in TOOLS if t["name"] == name)
    Draft202012Validator(schema).validate(block.input)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (INPUT_TOKENS, tokens)

    # Streamed: a tool_use block whose input arrives as input_json_delta fragments.
    with client.messages.stream(model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES,
                                tools=TOOLS, tool_choice=choice) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == expected
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == tokens
    fragments = [e.delta.partial_json for e in events
                 if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert len(fragments) == 2 and orjson.loads("".join(fragments)) == expected


def test_tool_choice_auto_gets_text(sim: SimServer, http2: httpx2.Client) -> None:
    message = client_for(sim, http2).messages.create(
        model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES,
        tools=TOOLS, tool_choice={"type": "auto"})
    assert message.stop_reason == "end_turn" and message.content[0].text == REPLY


def test_a_forced_choice_needs_the_tool(sim: SimServer, http: httpx.Client) -> None:
    url = sim.base_url("anthropic") + "/messages"
    base = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}
    for extra in ({"tool_choice": {"type": "any"}},
                  {"tools": TOOLS, "tool_choice": {"type": "tool", "name": "nope"}}):
        response = http.post(url, headers=headers_for(), json={**base, **extra})
        assert response.status_code == 400, extra
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_bad_key_is_an_authentication_error(sim: SimServer, http2: httpx2.Client, http: httpx.Client) -> None:
    client = client_for(sim, http2, fake_key("invalid-"))
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert info.value.status_code == 401
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    assert body["request_id"].startswith("req_")
    with pytest.raises(anthropic.AuthenticationError):
        client.models.list()
    # No key at all, and a bad one in x-api-key: the same answer, before anything else is checked.
    url = sim.base_url("anthropic") + "/messages"
    for headers in ({"anthropic-version": "2023-06-01"}, headers_for(fake_key("invalid-"), version=None)):
        response = http.post(url, headers=headers, json={})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_request_checks(sim: SimServer, http: httpx.Client) -> None:
    url = sim.base_url("anthropic") + "/messages"
    good = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}
    response = http.post(url, headers=headers_for(version=None), json=good)
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error",
                                        "message": "anthropic-version: header is required"}
    without_max_tokens = {k: v for k, v in good.items() if k != "max_tokens"}
    response = http.post(url, headers=headers_for(), json=without_max_tokens)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == "max_tokens: Field required"
    assert response.headers["request-id"] == body["request_id"]
    without_model = {k: v for k, v in good.items() if k != "model"}
    for bad in ({**good, "max_tokens": 0}, {**good, "messages": []}, without_model,
                {**good, "messages": [{"role": "system", "content": "x"}]}):
        assert http.post(url, headers=headers_for(), json=bad).status_code == 400, bad
    assert http.post(url, headers=headers_for(), content=b"{nope").status_code == 400
    assert http.post(url, headers=headers_for(), json=good).status_code == 200


@pytest.mark.parametrize(("status", "error", "error_type"), [
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (529, anthropic.OverloadedError, "overloaded_error"),
    (503, anthropic.InternalServerError, "api_error"),
])
def test_status_faults(sim: SimServer, http2: httpx2.Client, status: int,
                       error: type[anthropic.APIStatusError], error_type: str) -> None:
    client = client_for(sim, http2)
    with pytest.raises(error) as info:
        client.messages.create(model=MODEL, max_tokens=10,
                               messages=with_directive(f"[[sim:status={status}]]"))
    assert info.value.status_code == status
    assert info.value.type == error_type
    assert info.value.request_id is not None and info.value.request_id.startswith("req_")
    assert info.value.response.headers.get("retry-after") == ("1" if status == 429 else None)
    # Streaming asks get the same error, as an HTTP status, before any event.
    with pytest.raises(error):
        client.messages.create(model=MODEL, max_tokens=10, stream=True,
                               messages=with_directive(f"[[sim:status={status}]]"))


def test_the_key_is_checked_before_faults(sim: SimServer, http2: httpx2.Client) -> None:
    client = client_for(sim, http2, fake_key("invalid-"))
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model=MODEL, max_tokens=10,
                               messages=with_directive("[[sim:status=529]]"))


def test_cut_after_ends_the_stream_without_message_stop(sim: SimServer, http2: httpx2.Client,
                                                        http: httpx.Client) -> None:
    client = client_for(sim, http2)
    seen: list[str] = []
    # What really happens: the SDK yields the events it got, then the transport's error comes out of
    # the iteration: unwrapped (httpx2.RemoteProtocolError, an incomplete chunked body) in older SDKs,
    # as APIConnectionError from anthropic 2.17 on.
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):  # noqa: SIM117
        with client.messages.stream(model=MODEL, max_tokens=1024,
                                    messages=with_directive("[[sim:cut_after=4]]")) as stream:
            seen.extend(event.type for event in stream)
    # 4 events were sent: message_start, content_block_start, ping (dropped by the SDK), one delta.
    assert seen[:2] == ["message_start", "content_block_start"]
    assert "message_stop" not in seen

    # On the wire: exactly 4 whole events, then the connection drops.
    received = read_until_cut(http, sim.base_url("anthropic") + "/messages", headers_for(),
                              {"model": MODEL, "max_tokens": 1024, "stream": True,
                               "messages": with_directive("[[sim:cut_after=4]]")})
    assert [name for name, _ in sse_events(received)] == [
        "message_start", "content_block_start", "ping", "content_block_delta"]

    # A cut longer than the stream still withholds the proper end.
    received = read_until_cut(http, sim.base_url("anthropic") + "/messages", headers_for(),
                              {"model": MODEL, "max_tokens": 1024, "stream": True,
                               "messages": with_directive("[[sim:cut_after=1000]]")})
    assert [name for name, _ in sse_events(received)][-2:] == ["content_block_stop", "message_delta"]

    # Not streaming: cut_after is ignored.
    message = client.messages.create(model=MODEL, max_tokens=1024, system=SYSTEM,
                                     messages=with_directive("[[sim:cut_after=2]]"))
    assert message.content[0].text == REPLY


def test_directives_are_removed_and_not_counted(sim: SimServer, http2: httpx2.Client) -> None:
    client = client_for(sim, http2)
    message = client.messages.create(model=MODEL, max_tokens=1024, system=SYSTEM,
                                     messages=with_directive("[[sim:delay_ms=1; no_usage]]"))
    assert message.content[0].text == REPLY
    # A directive outside the last user message is plain text, echoed and counted.
    messages = [{"role": "user", "content": "[[sim:status=429]]"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "hi"}]
    message = client.messages.create(model=MODEL, max_tokens=1024, messages=messages)
    assert message.usage.input_tokens == (4 + 1) + (4 + 1) + (4 + 1)


def test_no_usage_drops_usage_everywhere(sim: SimServer, http: httpx.Client) -> None:
    url = sim.base_url("anthropic") + "/messages"
    request = {"model": MODEL, "max_tokens": 1024, "messages": with_directive("[[sim:no_usage]]")}
    body = http.post(url, headers=headers_for(), json=request).json()
    assert "usage" not in body and body["content"][0]["text"] == f"Simulated reply from anthropic/{MODEL}: " \
        "And of Italy, please?"
    events = dict(sse_events(http.post(url, headers=headers_for(), json={**request, "stream": True}).content))
    assert "usage" not in events["message_start"]["message"]
    assert "usage" not in events["message_delta"]


def test_delay_and_several_faults_in_one_directive(sim: SimServer, http2: httpx2.Client) -> None:
    client = client_for(sim, http2)
    started = time.monotonic()
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model=MODEL, max_tokens=10,
                               messages=with_directive("[[sim:delay_ms=200;status=429]]"))
    assert time.monotonic() - started >= 0.2


def test_an_unknown_directive_is_a_bad_request(sim: SimServer, http2: httpx2.Client) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client_for(sim, http2).messages.create(model=MODEL, max_tokens=10,
                                               messages=with_directive("[[sim:explode]]"))
    assert "explode" in str(info.value.api_message)


def test_models_list(sim: SimServer, http2: httpx2.Client, http: httpx.Client) -> None:
    catalog_ids = [m.id for m in load_catalog().models.values() if m.provider == "anthropic"]
    page = client_for(sim, http2).models.list()
    assert [m.id for m in page.data] == catalog_ids
    assert {m.type for m in page.data} == {"model"}
    assert page.has_more is False and page.first_id == catalog_ids[0] and page.last_id == catalog_ids[-1]
    assert [m.id for m in client_for(sim, http2).models.list()] == catalog_ids  # auto-pagination stops
    body = http.get(sim.base_url("anthropic") + "/models", headers=headers_for()).json()
    assert set(body) == {"data", "has_more", "first_id", "last_id"}
    assert body["data"][0] == {"type": "model", "id": catalog_ids[0], "display_name": "Claude Opus 5",
                               "created_at": "2026-01-01T00:00:00Z", "lifecycle": "active"}
    assert any(m["display_name"] == "Claude Haiku 4.5" for m in body["data"])


def test_calls_are_recorded(sim: SimServer, http2: httpx2.Client, http: httpx.Client) -> None:
    key = fake_key()
    digest = hashlib.sha256(key.encode()).hexdigest()
    client = client_for(sim, http2, key)
    client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    list(client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True))
    client.models.list()
    # x-api-key (what the gateway sends) and the SDK's bearer header record the same hash.
    http.post(sim.base_url("anthropic") + "/messages", headers=headers_for(key),
              json={"model": "claude-opus-5", "max_tokens": 10, "messages": MESSAGES})
    calls = [c for c in sim.calls() if c["keySha256"] == digest]
    assert [(c["provider"], c["model"], c["stream"], c["path"]) for c in calls] == [
        ("anthropic", MODEL, False, "/anthropic/v1/messages"),
        ("anthropic", MODEL, True, "/anthropic/v1/messages"),
        ("anthropic", None, False, "/anthropic/v1/models"),
        ("anthropic", "claude-opus-5", False, "/anthropic/v1/messages"),
    ]
    assert key not in orjson.dumps(sim.calls()).decode()


def test_unknown_paths_get_an_anthropic_404(sim: SimServer, http: httpx.Client) -> None:
    response = http.post(sim.base_url("anthropic") + "/complete", headers=headers_for(), json={})
    assert response.status_code == 404
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"


THINKING = "Simulated thinking by anthropic/claude-sonnet-5: And of Italy, please?"


def test_thinking_is_signed_and_counted_as_output_streamed_and_not(sim: SimServer,
                                                                   http2: httpx2.Client) -> None:
    client = client_for(sim, http2)
    ask: dict[str, Any] = {"model": MODEL, "max_tokens": 2000, "system": SYSTEM, "messages": MESSAGES,
                           "thinking": {"type": "enabled", "budget_tokens": 1024}}
    signature = "sim-sig-" + hashlib.sha256(THINKING.encode()).hexdigest()
    message = client.messages.create(**ask)
    with client.messages.stream(**ask) as stream:
        deltas = [event.delta.type for event in stream if event.type == "content_block_delta"]
        streamed = stream.get_final_message()
    for answer in (message, streamed):
        assert [block.type for block in answer.content] == ["thinking", "text"]
        assert (answer.content[0].thinking, answer.content[0].signature) == (THINKING, signature)  # type: ignore[union-attr]
        assert answer.content[1].text == REPLY  # type: ignore[union-attr]
        assert answer.usage.output_tokens == OUTPUT_TOKENS + len(THINKING.split())
    assert deltas.count("thinking_delta") == len(THINKING.split()) and deltas.count("signature_delta") == 1
    # Sent back with its signature it is accepted; edited, it is refused as Anthropic refuses it.
    turn = {"role": "assistant", "content": [block.model_dump() for block in message.content]}
    ok = {"role": "user", "content": "ok"}
    again = client.messages.create(**{**ask, "messages": [*MESSAGES, turn, ok]})
    assert again.content[-1].type == "text"
    edited = {**turn, "content": [{**turn["content"][0], "thinking": "edited"}, turn["content"][1]]}
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        client.messages.create(**{**ask, "messages": [*MESSAGES, edited, ok]})


@pytest.mark.parametrize("thinking", [{"type": "enabled", "budget_tokens": 1023},
                                      {"type": "enabled", "budget_tokens": 2000},
                                      {"type": "adaptive", "budget_tokens": 1024}, {"type": "sometimes"}])
def test_a_bad_thinking_setting_is_refused(sim: SimServer, http2: httpx2.Client,
                                           thinking: dict[str, Any]) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client_for(sim, http2).messages.create(model=MODEL, max_tokens=2000, messages=MESSAGES,
                                               thinking=thinking)  # type: ignore[arg-type]


def test_cache_control_reads_half_and_writes_a_quarter_and_is_recorded(sim: SimServer,
                                                                        http2: httpx2.Client) -> None:
    key = fake_key()
    mark = {"type": "ephemeral"}
    message = client_for(sim, http2, key).messages.create(
        model=MODEL, max_tokens=100, system=[{"type": "text", "text": SYSTEM, "cache_control": mark}],
        messages=MESSAGES)  # type: ignore[arg-type]
    read, written = INPUT_TOKENS // 2, INPUT_TOKENS // 4
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens,
            message.usage.cache_creation_input_tokens) == (INPUT_TOKENS - read - written, read, written)
    [call] = [c for c in sim.calls() if c["keySha256"] == hashlib.sha256(key.encode()).hexdigest()]
    assert call["received"]["cache_control"] == {"system.0": mark}


def test_count_tokens_counts_by_the_rule(sim: SimServer, http2: httpx2.Client) -> None:
    counted = client_for(sim, http2).messages.count_tokens(model=MODEL, system=SYSTEM, messages=MESSAGES)
    assert counted.input_tokens == INPUT_TOKENS
    with pytest.raises(anthropic.AuthenticationError):
        client_for(sim, http2, "invalid-" + fake_key()).messages.count_tokens(model=MODEL, messages=MESSAGES)

"""The Anthropic Messages adapter: request, response, stream and error translation (no network)."""

import orjson
import pytest

from alumia.domain.usage import TokenUsage
from alumia.providers.anthropic import AnthropicAdapter
from alumia.providers.base import ChatRequest

import conformance

ADAPTER = AnthropicAdapter()
KEY = "sk-ant-api03-" + "x" * 93 + "AA"
BASE = "https://api.anthropic.com/v1"
HI = [{"role": "user", "content": "hi"}]


def chat(body: dict, *, stream: bool = False, include_usage: bool = False) -> ChatRequest:
    body = {"model": "claude-sonnet-5", **body}
    return ChatRequest(raw=orjson.dumps(body), body=body, model=body["model"], stream=stream,
                       include_usage=include_usage, max_output_tokens=body.get("max_tokens"))


def upstream(body: dict, *, stream: bool = False, max_output_tokens: int = 1024) -> dict:
    return orjson.loads(ADAPTER.build(BASE, chat(body, stream=stream), KEY, max_output_tokens).body)


# --- request ------------------------------------------------------------------------------------


def test_url_headers_and_the_key_only_in_x_api_key() -> None:
    built = ADAPTER.build(BASE, chat({"messages": [{"role": "user", "content": "hi"}]}), KEY, 512)
    assert built.url == "https://api.anthropic.com/v1/messages"
    assert built.headers == {"x-api-key": KEY, "anthropic-version": "2023-06-01",
                             "content-type": "application/json"}
    assert KEY.encode() not in built.body
    assert [name for name, value in built.headers.items() if KEY in value] == ["x-api-key"]


def test_plain_body_model_max_tokens_from_argument_and_no_stream() -> None:
    body = upstream({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}, max_output_tokens=300)
    assert body == {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 300}


def test_stream_flag() -> None:
    assert upstream({"messages": [{"role": "user", "content": "hi"}], "stream": True}, stream=True)["stream"]


def test_a_single_system_message_becomes_a_string() -> None:
    body = upstream({"messages": [{"role": "system", "content": "be brief"},
                                  {"role": "user", "content": "hi"}]})
    assert body["system"] == "be brief"
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_system_and_developer_messages_anywhere_are_collected_into_blocks() -> None:
    body = upstream({"messages": [
        {"role": "system", "content": "one"},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "two"},
                                          {"type": "text", "text": "three"}]},
        {"role": "assistant", "content": "hello"},
    ]})
    assert body["system"] == [{"type": "text", "text": t} for t in ("one", "two", "three")]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]


def test_consecutive_same_role_turns_are_merged() -> None:
    body = upstream({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                  {"role": "assistant", "content": "c"}]})
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
    ]


def test_images_from_data_uris_and_urls() -> None:
    body = upstream({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}]})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_tool_calls_and_merged_tool_results() -> None:
    body = upstream({"messages": [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{not json"}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "thanks"},
    ]})
    assert body["messages"] == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rain"}]},
            {"type": "text", "text": "thanks"},
        ]},
    ]


TOOLS = [{"type": "function", "function": {"name": "weather", "description": "Weather for a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}},
                                            "strict": True}}]


def test_tools_become_input_schemas() -> None:
    body = upstream({"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS})
    assert body["tools"] == [{"name": "weather", "description": "Weather for a city",
                              "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert "tool_choice" not in body


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("none", None, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "weather"}}, None, {"type": "tool", "name": "weather"}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("none", False, {"type": "none"}),
    ("auto", True, {"type": "auto"}),
])
def test_tool_choice_and_parallel_tool_calls(choice: object, parallel: bool | None, expected: dict) -> None:
    request: dict = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    if choice is not None:
        request["tool_choice"] = choice
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    assert upstream(request)["tool_choice"] == expected


@pytest.mark.parametrize(("stop", "expected"),
                         [("END", ["END"]), (["a", "b"], ["a", "b"]), ([" ", "x"], ["x"])])
def test_stop_becomes_stop_sequences(stop: object, expected: list[str]) -> None:
    assert upstream({"messages": HI, "stop": stop})["stop_sequences"] == expected


@pytest.mark.parametrize(("given", "sent"), [(1.7, 1.0), (0.3, 0.3), (-1, 0.0), (2, 1.0)])
def test_temperature_is_clamped(given: float, sent: float) -> None:
    assert upstream({"messages": HI, "temperature": given})["temperature"] == sent


def test_top_p_user_and_dropped_openai_only_params() -> None:
    body = upstream({"messages": [{"role": "user", "content": "hi"}], "top_p": 0.9, "user": "u-42",
                     "n": 1, "seed": 3, "logprobs": True, "frequency_penalty": 0.5,
                     "response_format": {"type": "text"}, "stream_options": {"include_usage": True}})
    assert body["top_p"] == 0.9
    assert body["metadata"] == {"user_id": "u-42"}
    assert set(body) == {"model", "messages", "max_tokens", "top_p", "metadata"}


# --- response -----------------------------------------------------------------------------------


def message(content: list[dict], stop_reason: str = "end_turn", **usage: int) -> bytes:
    return orjson.dumps({
        "id": "msg_01ABC", "type": "message", "role": "assistant", "model": "claude-sonnet-5-20260901",
        "content": content, "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    })


def parse(body: bytes) -> tuple[dict, TokenUsage]:
    out, usage = ADAPTER.parse_response(body, chat({"messages": []}))
    parsed = orjson.loads(out)
    conformance.validate("CreateChatCompletionResponse", parsed)
    return parsed, usage


def test_text_response() -> None:
    out, usage = parse(message([{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}]))
    assert out["id"] == "chatcmpl-msg_01ABC"
    assert out["object"] == "chat.completion"
    assert out["model"] == "claude-sonnet-5"
    assert isinstance(out["created"], int)
    assert out["choices"] == [{"index": 0, "finish_reason": "stop", "logprobs": None,
                               "message": {"role": "assistant", "content": "Hello world", "refusal": None}}]
    assert usage == TokenUsage(input_tokens=10, output_tokens=5)


def test_tool_use_response() -> None:
    out, _ = parse(message([{"type": "text", "text": "Let me check."},
                            {"type": "tool_use", "id": "toolu_9", "name": "weather",
                             "input": {"city": "Paris", "units": ["c"]}}], "tool_use"))
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_9", "type": "function", "function": {
        "name": "weather", "arguments": '{"city":"Paris","units":["c"]}'}}]


def test_tool_use_only_has_null_content() -> None:
    out, _ = parse(message([{"type": "tool_use", "id": "toolu_9", "name": "now", "input": {}}], "tool_use"))
    assert out["choices"][0]["message"]["content"] is None
    assert out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_thinking_becomes_reasoning_content() -> None:
    out, _ = parse(message([{"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                            {"type": "redacted_thinking", "data": "opaque"},
                            {"type": "text", "text": "42"}]))
    assert out["choices"][0]["message"]["reasoning_content"] == "Hmm."
    assert out["choices"][0]["message"]["content"] == "42"
    plain, _ = parse(message([{"type": "text", "text": "42"}]))
    assert "reasoning_content" not in plain["choices"][0]["message"]


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter"),
    ("something_new", "stop"),
])
def test_stop_reason_mapping(stop_reason: str, finish: str) -> None:
    out, _ = parse(message([{"type": "text", "text": "x"}], stop_reason))
    assert out["choices"][0]["finish_reason"] == finish


def test_usage_counts_cache_reads_and_writes_once() -> None:
    out, usage = parse(message([{"type": "text", "text": "x"}], input_tokens=100, output_tokens=50,
                               cache_creation_input_tokens=20, cache_read_input_tokens=300))
    assert usage == TokenUsage(100, 50, 300, 20)
    assert out["usage"]["prompt_tokens"] == 420
    assert out["usage"]["completion_tokens"] == 50
    assert out["usage"]["total_tokens"] == 470
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 300
    assert out["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}


# --- stream -------------------------------------------------------------------------------------


def block_delta(index: int, **delta: str) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": delta}


EVENTS = [
    {"type": "message_start", "message": {
        "id": "msg_01XYZ", "type": "message", "role": "assistant", "model": "claude-sonnet-5-20260901",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 100, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 300,
                  "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_01A", "name": "weather", "input": {}}},
    block_delta(1, type="input_json_delta", partial_json=""),
    block_delta(1, type="input_json_delta", partial_json='{"ci'),
    block_delta(1, type="input_json_delta", partial_json='ty": "Paris"}'),
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"input_tokens": 100, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 300,
               "output_tokens": 50}},
    {"type": "message_stop"},
]


def run(events: list[dict], include_usage: bool) -> tuple[list[dict], object]:
    translator = ADAPTER.stream_translator(chat({"messages": []}, stream=True, include_usage=include_usage))
    frames = [frame for event in events for frame in translator.feed(orjson.dumps(event))]
    frames += translator.close()
    chunks = []
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        chunk = orjson.loads(frame[6:])
        conformance.validate("CreateChatCompletionStreamResponse", chunk)
        chunks.append(chunk)
    return chunks, translator


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_reassembles_text_tool_call_finish_and_usage(include_usage: bool) -> None:
    chunks, translator = run(EVENTS, include_usage)
    for chunk in chunks:  # each one also validated against the stream schema in run()
        assert chunk["id"] == "chatcmpl-msg_01XYZ"
        assert chunk["model"] == "claude-sonnet-5"
        assert ("usage" in chunk) is include_usage
    with_choices = [c for c in chunks if c["choices"]]
    deltas = [c["choices"][0]["delta"] for c in with_choices]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check."
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "toolu_01A", "type": "function",
                        "function": {"name": "weather", "arguments": ""}}
    assert all(call["index"] == 0 for call in calls)
    assert orjson.loads("".join(call["function"]["arguments"] for call in calls)) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in with_choices][-1] == "tool_calls"
    assert all(c["choices"][0]["finish_reason"] is None for c in with_choices[:-1])
    assert translator.finished
    assert translator.usage == TokenUsage(100, 50, 300, 20)
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert usage_chunks == [chunks[-1]]
        assert chunks[-1]["usage"] == {
            "prompt_tokens": 420, "completion_tokens": 50, "total_tokens": 470,
            "prompt_tokens_details": {"cached_tokens": 300, "cache_write_tokens": 20},
            "completion_tokens_details": {"reasoning_tokens": 0}}
    else:
        assert usage_chunks == []


def test_stream_thinking_and_second_tool_index() -> None:
    events = [EVENTS[0],
              {"type": "content_block_start", "index": 0,
               "content_block": {"type": "thinking", "thinking": ""}},
              block_delta(0, type="thinking_delta", thinking="Hm"),
              block_delta(0, type="signature_delta", signature="s"),
              {"type": "content_block_start", "index": 1, "content_block": {
                  "type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}},
              {"type": "content_block_start", "index": 2, "content_block": {
                  "type": "tool_use", "id": "toolu_b", "name": "g", "input": {}}},
              block_delta(2, type="input_json_delta", partial_json="{}"),
              {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
               "usage": {"output_tokens": 9}},
              {"type": "message_stop"}]
    chunks, translator = run(events, include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert {"reasoning_content": "Hm"} in deltas
    assert [call["index"] for d in deltas for call in d.get("tool_calls", []) if "id" in call] == [0, 1]
    assert deltas[-2:] == [{"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # Input came from message_start only; the message_delta without input counts did not reset it.
    assert translator.usage == TokenUsage(100, 9, 300, 20)


def test_stream_error_event_is_an_in_band_error_frame() -> None:
    translator = ADAPTER.stream_translator(chat({"messages": []}, stream=True))
    translator.feed(orjson.dumps(EVENTS[0]))
    frames = translator.feed(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    assert frames == [b'data: {"error":{"message":"Overloaded","type":"overloaded_error","param":null,'
                      b'"code":"overloaded_error"}}\n\n']
    assert not translator.finished
    assert translator.close() == []
    assert translator.usage == TokenUsage(100, 1, 300, 20)  # what was known when the stream broke


def test_interrupted_stream_sends_no_usage_chunk() -> None:
    _, translator = run(EVENTS[:5], include_usage=True)
    assert not translator.finished
    assert translator.close() == []


# --- errors -------------------------------------------------------------------------------------


def test_parse_error_reads_message_type_and_retry_after() -> None:
    body = (b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},'
            b'"request_id":"req_011"}')
    error = ADAPTER.parse_error("anthropic", 529, body, {"retry-after": "7"})
    assert (error.provider, error.status, error.message, error.code, error.retry_after) == (
        "anthropic", 529, "Overloaded", "overloaded_error", "7")


def test_parse_error_authentication_and_unreadable_bodies() -> None:
    auth = ADAPTER.parse_error("anthropic", 401, b'{"type":"error","error":{"type":"authentication_error",'
                                                 b'"message":"invalid x-api-key"}}', {})
    assert (auth.message, auth.code, auth.retry_after) == ("invalid x-api-key", "authentication_error", None)
    garbage = ADAPTER.parse_error("anthropic", 502, b"<html>bad gateway</html>", {})
    assert garbage.code is None and "html" not in garbage.message


def test_only_the_held_limit_is_sent_as_max_tokens_and_n_never() -> None:
    body = upstream({"messages": HI, "max_completion_tokens": 1, "max_tokens": 2064, "n": 3},
                    max_output_tokens=1)
    assert body["max_tokens"] == 1 and "max_completion_tokens" not in body and "n" not in body


@pytest.mark.parametrize("usage", [None, {}, {"input_tokens": 10}, {"output_tokens": 5},
                                   {"input_tokens": "10", "output_tokens": 5},
                                   {"input_tokens": 10, "output_tokens": None}])
def test_missing_or_partial_usage_is_none_and_the_body_has_no_usage(usage: dict | None) -> None:
    raw: dict = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-5",
                 "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn"}
    if usage is not None:
        raw["usage"] = usage
    out, parsed = parse(orjson.dumps(raw))
    assert parsed is None and "usage" not in out
    assert out["choices"][0]["message"]["content"] == "Hello"


def test_complete_usage_without_cache_counts_is_read() -> None:
    _, usage = parse(message([{"type": "text", "text": "x"}], input_tokens=0, output_tokens=0))
    assert usage == TokenUsage()

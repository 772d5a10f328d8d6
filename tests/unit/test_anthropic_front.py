"""The Anthropic front door's translation: Messages request -> OpenAI, and OpenAI answers -> Anthropic."""

import anthropic
import orjson
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent

from alumia.errors import AppError, ErrorCode
from alumia.gateway.anthropic_front import (
    AnthropicEventStream,
    anthropic_message,
    error_body,
    error_type,
    openai_request,
    stop_reason,
)
from alumia.providers import anthropic as anthropic_adapter
from alumia.providers.base import ChatRequest

try:  # anthropic 2.x is built on httpx2 and refuses httpx objects; older releases use httpx
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover
    import httpx as sdk_http  # type: ignore[no-redef]

HI = [{"role": "user", "content": "hi"}]
WEATHER = {"name": "weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
EVENTS = pydantic.TypeAdapter(RawMessageStreamEvent)


def convert(**fields: object) -> dict:
    return openai_request({"model": "m", "max_tokens": 100, "messages": HI, **fields})


# --- request ------------------------------------------------------------------------------------


def test_a_plain_request() -> None:
    assert convert() == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}


def test_system_string_and_text_blocks_become_the_first_message() -> None:
    assert convert(system="be brief")["messages"][0] == {"role": "system", "content": "be brief"}
    blocks = [{"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "two"}]
    assert convert(system=blocks)["messages"] == [{"role": "system", "content": "one\n\ntwo"},
                                                  {"role": "user", "content": "hi"}]


def test_parameters_stop_sequences_metadata_and_stream() -> None:
    body = convert(stop_sequences=["END", "\n\nHuman:"], temperature=0.5, top_p=0.9, top_k=5,
                   metadata={"user_id": "u-1"}, stream=True)
    assert body["stop"] == ["END", "\n\nHuman:"]
    assert (body["temperature"], body["top_p"], body["user"]) == (0.5, 0.9, "u-1")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "top_k" not in body and "metadata" not in body
    assert "stream" not in convert(stream=False) and "stop" not in convert(stop_sequences=[])


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "weather"}, {"tool_choice": {"type": "function",
                                                           "function": {"name": "weather"}}}),
    ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required",
                                                          "parallel_tool_calls": False}),
    (None, {}),
])
def test_tools_and_tool_choice(choice: dict | None, expected: dict) -> None:
    body = convert(tools=[WEATHER], tool_choice=choice)
    assert body["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": "Weather for a city", "parameters": WEATHER["input_schema"]}}]
    assert {k: body[k] for k in ("tool_choice", "parallel_tool_calls") if k in body} == expected


def test_tool_choice_without_tools_is_not_sent() -> None:
    assert "tool_choice" not in convert(tool_choice={"type": "any"})


CONVERSATION = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "two calls", "signature": "sig"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
         "content": [{"type": "text", "text": "no data"}]},
        {"type": "text", "text": "Thanks"}]},
]


def call(call_id: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "weather", "arguments": arguments}}


def test_tool_use_and_tool_result_become_tool_calls_and_tool_messages() -> None:
    assert convert(messages=CONVERSATION)["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.",
         "tool_calls": [call("toolu_1", '{"city":"Paris"}'), call("toolu_2", '{"city":"Rome"}')]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no data"},
        {"role": "user", "content": "Thanks"},
    ]


def test_an_assistant_turn_of_tool_calls_only_has_null_content() -> None:
    messages = [*HI, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}]}]
    assert convert(messages=messages)["messages"][1]["content"] is None


def test_the_conversation_survives_a_round_trip_through_the_anthropic_adapter() -> None:
    """Anthropic -> OpenAI (front door) -> Anthropic (provider adapter) gives back the same turns."""
    body = convert(messages=CONVERSATION, system="be brief", tools=[WEATHER],
                   tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True})
    chat = ChatRequest(raw=orjson.dumps(body), body=body, model="m", stream=False, include_usage=False,
                       max_output_tokens=100)
    back = anthropic_adapter.request_body(chat, 100)
    assert back["system"] == "be brief"
    assert back["tools"] == [WEATHER]
    assert back["tool_choice"] == {"type": "tool", "name": "weather", "disable_parallel_tool_use": True}
    without_thinking = [CONVERSATION[0], {**CONVERSATION[1], "content": CONVERSATION[1]["content"][1:]}]
    assert back["messages"][:2] == without_thinking
    assert back["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "Error: no data"},
        {"type": "text", "text": "Thanks"}]


def test_images_become_image_url_parts() -> None:
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
               {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]
    assert convert(messages=[{"role": "user", "content": content}])["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]


@pytest.mark.parametrize(("fields", "needle"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"model": ""}, "model"),
    ({"messages": []}, "messages"),
    ({"stream": "yes"}, "stream"),
    ({"messages": [{"role": "system", "content": "secret-value"}]}, "role"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages[0]"),
    ({"tools": [{"type": "web_search_20250305", "name": "secret-value"}]}, "tools[0]"),
    ({"tools": [WEATHER], "tool_choice": {"type": "secret-value"}}, "tool_choice"),
    ({"system": [{"type": "image"}]}, "system"),
])
def test_bad_requests_are_validation_errors_that_echo_nothing(fields: dict, needle: str) -> None:
    body = {"model": "m", "max_tokens": 100, "messages": HI, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(AppError) as raised:
        openai_request(body)
    assert raised.value.code == "VALIDATION_ERROR" and raised.value.status == 422
    assert needle in raised.value.message and "secret-value" not in raised.value.message


# --- message ------------------------------------------------------------------------------------


def completion(message: dict, finish: str = "stop", usage: dict | None = None) -> dict:
    return {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "gpt-5.6-luna",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}


def test_a_text_answer() -> None:
    message = anthropic_message(completion({"content": "Hello there"}))
    assert message == {"id": "msg_abc", "type": "message", "role": "assistant", "model": "gpt-5.6-luna",
                       "content": [{"type": "text", "text": "Hello there"}], "stop_reason": "end_turn",
                       "stop_sequence": None,
                       "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 0,
                                 "cache_creation_input_tokens": 0}}
    Message.model_validate(message)


def test_tool_calls_become_tool_use_blocks_and_bad_arguments_an_empty_input() -> None:
    message = anthropic_message(completion(
        {"content": None, "tool_calls": [call("call_1", '{"city":"Paris"}'), call("call_2", '{"city":')]},
        "tool_calls"))
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {}}]
    assert message["stop_reason"] == "tool_use"
    Message.model_validate(message)


@pytest.mark.parametrize(("finish", "reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("content_filter", "refusal"), (None, "end_turn"), ("something_new", "end_turn")])
def test_stop_reasons(finish: str | None, reason: str) -> None:
    assert stop_reason(finish) == reason
    assert anthropic_message(completion({"content": "x"}, finish))["stop_reason"] == reason  # type: ignore[arg-type]


def test_stop_reasons_invert_the_provider_adapters_finish_reasons() -> None:
    for finish in ("stop", "length", "tool_calls", "content_filter"):
        assert anthropic_adapter.finish_reason(stop_reason(finish)) == finish


def test_usage_takes_cache_reads_and_writes_out_of_the_input() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
             "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300}}
    assert anthropic_message(completion({"content": "x"}, usage=usage))["usage"] == {
        "input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 600,
        "cache_creation_input_tokens": 300}


def test_an_anthropic_completion_id_is_not_prefixed_twice() -> None:
    assert anthropic_message({**completion({"content": "x"}), "id": "chatcmpl-msg_01X"})["id"] == "msg_01X"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (402, "billing_error"),
    (403, "permission_error"), (404, "not_found_error"), (422, "invalid_request_error"),
    (429, "rate_limit_error"), (502, "api_error"), (503, "overloaded_error"), (504, "timeout_error")])
def test_error_types_by_status(status: int, kind: str) -> None:
    assert error_type(status) == kind


def test_error_body() -> None:
    error = AppError(ErrorCode.PAYMENT_REQUIRED, "Org balance is insufficient")
    assert error_body(error, "req_1") == {
        "type": "error", "request_id": "req_1",
        "error": {"type": "billing_error", "message": "Org balance is insufficient",
                  "code": "PAYMENT_REQUIRED"}}


# --- stream -------------------------------------------------------------------------------------


def frame(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    chunk = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5.6-luna",
             "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
             "usage": usage}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


STREAM_USAGE = {"prompt_tokens": 120, "completion_tokens": 17, "total_tokens": 137,
                "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0}}
OPENAI_FRAMES = [
    frame({"role": "assistant", "content": ""}),
    frame({"content": "Let me"}),
    frame({"content": " check."}),
    frame({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "weather", "arguments": ""}}]}),
    frame({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    frame({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    frame({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]}),
    frame({}, "tool_calls"),
    frame(usage=STREAM_USAGE),
    b"data: [DONE]\n\n",
]


def translate(frames: list[bytes]) -> list[tuple[str, dict]]:
    stream = AnthropicEventStream("gpt-5.6-luna")
    out = [event for f in frames for event in stream.feed(f)] + stream.close()
    events = []
    for raw in out:
        head, data = raw.decode().removesuffix("\n\n").split("\n")
        assert head.startswith("event: ") and data.startswith("data: ")
        payload = orjson.loads(data[6:])
        assert payload["type"] == head[7:]
        events.append((head[7:], payload))
    return events


def test_a_stream_with_text_tool_calls_and_usage_becomes_the_anthropic_event_sequence() -> None:
    events = translate(OPENAI_FRAMES)
    assert [(kind, {k: v for k, v in data.items() if k != "type"}) for kind, data in events] == [
        ("message_start", {"message": {
            "id": "msg_s1", "type": "message", "role": "assistant", "model": "gpt-5.6-luna", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Let me"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": " check."}}),
        ("content_block_stop", {"index": 0}),
        ("content_block_start", {"index": 1, "content_block": {
            "type": "tool_use", "id": "call_a", "name": "weather", "input": {}}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta",
                                                       "partial_json": '{"city":'}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta",
                                                       "partial_json": '"Paris"}'}}),
        ("content_block_stop", {"index": 1}),
        ("content_block_start", {"index": 2, "content_block": {
            "type": "tool_use", "id": "call_b", "name": "weather", "input": {}}}),
        ("content_block_delta", {"index": 2, "delta": {
            "type": "input_json_delta", "partial_json": '{"city":"Rome"}'}}),
        ("content_block_stop", {"index": 2}),
        ("message_delta", {"delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"input_tokens": 20, "output_tokens": 17, "cache_read_input_tokens": 100,
                                     "cache_creation_input_tokens": 0}}),
        ("message_stop", {}),
    ]


def test_the_sdks_own_accumulator_builds_the_final_message_from_the_events() -> None:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for _, data in translate(OPENAI_FRAMES):
        event = EVENTS.validate_python(data)  # strict: each event is a valid RawMessageStreamEvent
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    assert [block.type for block in snapshot.content] == ["text", "tool_use", "tool_use"]
    assert snapshot.content[0].text == "Let me check."  # type: ignore[union-attr]
    assert snapshot.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert snapshot.content[2].input == {"city": "Rome"}  # type: ignore[union-attr]
    assert snapshot.stop_reason == "tool_use"
    assert (snapshot.usage.input_tokens, snapshot.usage.output_tokens,
            snapshot.usage.cache_read_input_tokens) == (20, 17, 100)


def sdk_client(body: bytes) -> anthropic.Anthropic:
    """The official client, reading `body` as the server's SSE answer."""
    def handler(request: sdk_http.Request) -> sdk_http.Response:
        return sdk_http.Response(200, content=body, headers={"content-type": "text/event-stream"})
    return anthropic.Anthropic(api_key="alm_test_x", base_url="http://gateway.test", max_retries=0,
                               http_client=sdk_http.Client(transport=sdk_http.MockTransport(handler)))


def test_the_sdk_reads_the_translated_stream_end_to_end() -> None:
    stream = AnthropicEventStream("gpt-5.6-luna")
    body = b"".join(event for f in OPENAI_FRAMES for event in stream.feed(f))
    with sdk_client(body).messages.stream(model="gpt-5.6-luna", max_tokens=100, messages=HI) as sdk:
        message = sdk.get_final_message()
    assert message.usage.input_tokens == 20 and message.usage.cache_read_input_tokens == 100
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]


def test_frames_split_anywhere_give_the_same_events() -> None:
    whole = b"".join(OPENAI_FRAMES)
    by_frame, by_piece = AnthropicEventStream("gpt-5.6-luna"), AnthropicEventStream("gpt-5.6-luna")
    pieces = [whole[i:i + 7] for i in range(0, len(whole), 7)]
    assert b"".join(e for p in pieces for e in by_piece.feed(p)) == b"".join(
        e for f in OPENAI_FRAMES for e in by_frame.feed(f))


def test_usage_in_the_finish_chunk_and_a_text_only_answer() -> None:
    events = translate([frame({"role": "assistant", "content": "Hi"}),
                        frame({}, "length", usage={"prompt_tokens": 5, "completion_tokens": 1}),
                        b"data: [DONE]\n\n"])
    assert [kind for kind, _ in events] == ["message_start", "content_block_start", "content_block_delta",
                                            "content_block_stop", "message_delta", "message_stop"]
    assert events[4][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[4][1]["usage"]["input_tokens"] == 5


def test_without_usage_message_delta_goes_out_at_done_with_zeros() -> None:
    events = translate([frame({"content": "Hi"}), frame({}, "stop"), b"data: [DONE]\n\n"])
    assert [kind for kind, _ in events][-2:] == ["message_delta", "message_stop"]
    assert events[-2][1]["usage"]["output_tokens"] == 0


def test_an_in_band_error_becomes_an_error_event_and_ends_the_stream() -> None:
    error = b'data: {"error":{"message":"openai stopped streaming","type":"api_error","code":"X"}}\n\n'
    events = translate([frame({"content": "Hi"}), error, frame({"content": "late"})])
    assert events[-1] == ("error", {"type": "error",
                                    "error": {"type": "api_error", "message": "openai stopped streaming"}})
    assert "late" not in orjson.dumps(events).decode()
    stream = AnthropicEventStream("m")
    body = b"".join(e for f in [frame({"content": "Hi"}), error] for e in stream.feed(f))
    with pytest.raises(anthropic.APIStatusError, match="openai stopped streaming"), \
            sdk_client(body).messages.stream(model="m", max_tokens=10, messages=HI) as sdk:
        sdk.get_final_message()


def test_a_stream_that_just_ends_gets_an_error_event() -> None:
    events = translate([frame({"content": "Hi"})])
    assert events[-1][0] == "error"

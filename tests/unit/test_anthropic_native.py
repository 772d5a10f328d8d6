"""Claude through the Anthropic door without the round trip through OpenAI's shape: the body sent, the
answer and the stream relayed as Anthropic wrote them, and a stream the hold ends still well formed."""

import orjson
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent

from alumia.domain.catalog import load_catalog
from alumia.domain.usage import TokenUsage
from alumia.errors import AppError
from alumia.gateway.anthropic_front import AnthropicEventStream, anthropic_answer
from alumia.gateway.messages_call import messages_call, padded
from alumia.providers.anthropic_native import (
    AnthropicNativeAdapter,
    count_tokens_request,
    counted_tokens,
    native_body,
)
from alumia.providers.base import ChatRequest
from alumia.providers.openai_answer import cut_answer
from alumia.services.streaming import _finish_frames

CATALOG = load_catalog()
EVENTS = pydantic.TypeAdapter(RawMessageStreamEvent)
KEY = "sk-ant-api03-" + "k" * 93 + "AA"
SIGNED = {"type": "thinking", "thinking": "I thought.", "signature": "EqQBCgIYAhIM" + "s" * 40}
CACHED = {"type": "ephemeral"}
CLIENT_BODY = {
    "model": "anthropic/claude-haiku-4-5", "max_tokens": 3000, "top_k": 5, "service_tier": "priority",
    "container": "c_1", "thinking": {"type": "enabled", "budget_tokens": 2000},
    "system": [{"type": "text", "text": "Be brief.", "cache_control": CACHED}],
    "tools": [{"name": "weather", "input_schema": {"type": "object"}, "cache_control": CACHED}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": CACHED}]},
                 {"role": "assistant", "content": [SIGNED, {"type": "text", "text": "Hello."}]},
                 {"role": "user", "content": "again"}],
}


def chat(body: dict, *, stream: bool = False) -> ChatRequest:
    return ChatRequest(raw=orjson.dumps(body), body=body, model="claude-haiku-4-5", stream=stream,
                       include_usage=True, max_output_tokens=body.get("max_tokens"))


def test_the_body_sent_is_the_clients_own_with_our_model_id_and_limit() -> None:
    sent = native_body(CLIENT_BODY, "claude-haiku-4-5", 3000, stream=True)
    assert sent == {
        "model": "claude-haiku-4-5", "max_tokens": 3000, "stream": True, "top_k": 5,
        "thinking": CLIENT_BODY["thinking"], "system": CLIENT_BODY["system"], "tools": CLIENT_BODY["tools"],
        "messages": CLIENT_BODY["messages"],  # cache_control marks and the signed thinking block intact
    }  # service_tier and container are not sent: their prices are not the catalog's


def test_the_adapter_posts_it_with_the_key_only_in_its_header() -> None:
    call = messages_call(CLIENT_BODY, CATALOG)
    view = orjson.loads(call.raw)
    request = ChatRequest(raw=call.raw, body=view, model="claude-haiku-4-5", stream=False,
                          include_usage=False, max_output_tokens=3000)
    adapter = call.adapt(CATALOG.providers["anthropic"], CATALOG_ADAPTER)
    upstream = adapter.build("https://api.anthropic.com/v1", request, KEY, 3000)
    assert upstream.url == "https://api.anthropic.com/v1/messages"
    assert upstream.headers["x-api-key"] == KEY and KEY.encode() not in upstream.body
    assert orjson.loads(upstream.body) == native_body(CLIENT_BODY, "claude-haiku-4-5", 3000, stream=False)


CATALOG_ADAPTER = object()  # what `adapt` is given for a provider it leaves alone


def test_the_view_is_padded_to_the_size_of_the_body_sent_so_the_hold_covers_it() -> None:
    call = messages_call(CLIENT_BODY, CATALOG)
    sent = orjson.dumps(native_body(CLIENT_BODY, "claude-haiku-4-5", 3000, stream=False))
    assert len(call.raw) >= len(sent) and call.thinking
    view = orjson.loads(call.raw)  # trailing whitespace: the view parses as before
    assert "thinking" not in orjson.dumps(view).decode() and view["max_tokens"] == 3000
    assert padded(b"{}", 1) == b"{}" and padded(b"{}", 5) == b"{}   "


def test_other_models_get_the_translated_view_and_their_reasoning_control() -> None:
    body = {**CLIENT_BODY, "model": "gemini-3.7-flash"}
    call = messages_call(body, CATALOG)
    assert call.adapt(CATALOG.providers["gemini"], CATALOG_ADAPTER) is CATALOG_ADAPTER
    view = orjson.loads(call.raw)
    assert view["extra_body"] == {"google": {"thinking_config": {"thinking_budget": 2000,
                                                                 "include_thoughts": True}}}
    assert "cache_control" not in call.raw.decode()  # dropped by design: Gemini caches by itself
    with pytest.raises(AppError) as raised:
        messages_call({**CLIENT_BODY, "model": "mistral-large-2512"}, CATALOG)
    assert raised.value.status == 400 and "thinking" in raised.value.message


@pytest.mark.parametrize(("mark", "path"), [
    ({"type": "persistent"}, "messages[0].content[0].cache_control"),
    ({"type": "ephemeral", "ttl": "1h"}, "messages[0].content[0].cache_control.ttl"),
])
def test_a_cache_mark_the_catalog_cannot_price_is_refused(mark: dict, path: str) -> None:
    body = {**CLIENT_BODY, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi", "cache_control": mark}]}]}
    with pytest.raises(AppError) as raised:
        messages_call(body, CATALOG)
    assert raised.value.status == 422 and raised.value.message.startswith(path)


def test_a_thinking_block_sent_back_without_its_signature_is_refused() -> None:
    unsigned = {"type": "thinking", "thinking": "I thought."}
    body = {**CLIENT_BODY, "messages": [*CLIENT_BODY["messages"][:1],
                                        {"role": "assistant", "content": [unsigned]},
                                        CLIENT_BODY["messages"][2]]}
    with pytest.raises(AppError) as raised:
        messages_call(body, CATALOG)
    assert raised.value.message.startswith("messages[1].content[0].signature: ")


MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
           "content": [SIGNED, {"type": "text", "text": "The answer."}], "stop_reason": "end_turn",
           "stop_sequence": None,
           "usage": {"input_tokens": 10, "output_tokens": 9, "cache_read_input_tokens": 30,
                     "cache_creation_input_tokens": 20}}


def test_the_answer_is_anthropics_own_and_its_usage_is_read_with_the_cache() -> None:
    out, usage = AnthropicNativeAdapter(CLIENT_BODY).parse_response(orjson.dumps(MESSAGE), chat(CLIENT_BODY))
    assert usage == TokenUsage(input_tokens=10, output_tokens=9, cache_read_tokens=30, cache_write_tokens=20)
    assert anthropic_answer(out, thinking=True) == MESSAGE


def test_an_answer_the_hold_cut_is_sent_as_cut_not_as_anthropic_wrote_it() -> None:
    out, _ = AnthropicNativeAdapter(CLIENT_BODY).parse_response(orjson.dumps(MESSAGE), chat(CLIENT_BODY))
    cut = anthropic_answer(cut_answer(out, len("I thought.") + 3), thinking=True)
    assert cut["content"] == [{"type": "thinking", "thinking": "I thought.", "signature": ""},
                              {"type": "text", "text": "The"}]
    assert cut["stop_reason"] == "max_tokens"


def sse(kind: str, data: dict) -> bytes:
    return orjson.dumps({"type": kind, **data})


UPSTREAM = [
    sse("message_start", {"message": {**MESSAGE, "content": [], "stop_reason": None,
                                      "usage": {**MESSAGE["usage"], "output_tokens": 1}}}),
    sse("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": "",
                                                              "signature": ""}}),
    sse("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "I thought."}}),
    sse("content_block_delta", {"index": 0, "delta": {"type": "signature_delta",
                                                      "signature": SIGNED["signature"]}}),
    sse("content_block_stop", {"index": 0}),
    sse("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
    sse("ping", {}),
    sse("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "The"}}),
    sse("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": " answer."}}),
    sse("content_block_stop", {"index": 1}),
    sse("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                          "usage": {"output_tokens": 9}}),
    sse("message_stop", {}),
]


def relayed(payloads: list[bytes], gateway_end: list[bytes]) -> list[bytes]:
    """What the door sends for these upstream payloads, the gateway's own frames after them."""
    translator = AdapterStream()
    door = AnthropicEventStream("claude-haiku-4-5", thinking=True)
    out: list[bytes] = []
    for payload in payloads:
        for frame in translator.feed(payload):
            out.extend(door.feed(frame))
    for frame in [*translator.close(), *gateway_end]:
        out.extend(door.feed(frame))
    return out


def AdapterStream():  # type: ignore[no-untyped-def]
    return AnthropicNativeAdapter(CLIENT_BODY).stream_translator(chat(CLIENT_BODY, stream=True))


def data_of(event: bytes) -> dict:
    return orjson.loads(event.split(b"\ndata: ", 1)[1])


def test_a_stream_is_relayed_event_for_event_and_the_sdk_builds_the_message() -> None:
    events = relayed(UPSTREAM, [b"data: [DONE]\n\n"])
    assert [data_of(e) for e in events] == [orjson.loads(p) for p in UPSTREAM]
    snapshot = None
    for event in events:
        if data_of(event)["type"] == "ping":  # the SDK passes pings by
            continue
        snapshot = accumulate_event(event=EVENTS.validate_python(data_of(event)), current_snapshot=snapshot,
                                    json_bufs={})
    assert snapshot is not None
    assert snapshot.content[0].type == "thinking"
    assert snapshot.content[0].signature == SIGNED["signature"]  # type: ignore[union-attr]


def test_a_stream_the_hold_ends_still_closes_its_block_and_the_message() -> None:
    end = _finish_frames({"id": "chatcmpl-msg_1", "model": "claude-haiku-4-5"},
                         TokenUsage(input_tokens=10, output_tokens=4), include_usage=True, request_id="req_1")
    events = relayed(UPSTREAM[:8], end)
    closing = [data_of(e)["type"] for e in events[-3:]]
    assert closing == ["content_block_stop", "message_delta", "message_stop"]
    assert data_of(events[-3])["index"] == 1
    assert data_of(events[-2])["delta"]["stop_reason"] == "max_tokens"
    assert data_of(events[-2])["usage"]["output_tokens"] == 4


def test_the_count_request_carries_our_model_id_and_the_fields_that_count() -> None:
    body = {key: value for key, value in CLIENT_BODY.items() if key != "max_tokens"}
    sent = count_tokens_request("https://api.anthropic.com/v1", body, "claude-haiku-4-5", KEY)
    assert sent.url == "https://api.anthropic.com/v1/messages/count_tokens"
    assert orjson.loads(sent.body) == {"model": "claude-haiku-4-5", "messages": body["messages"],
                                       "system": body["system"], "tools": body["tools"],
                                       "thinking": body["thinking"]}
    assert counted_tokens(b'{"input_tokens": 42}') == 42
    with pytest.raises(ValueError):
        counted_tokens(b'{"type": "message"}')

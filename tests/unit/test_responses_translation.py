"""The Responses door's translation, both ways: request checks and the chat view, the Response and events."""

from typing import Any

import orjson
import pytest

from alumia.domain.catalog import load_catalog
from alumia.errors import AppError
from alumia.gateway.responses_answer import ResponseEventStream, answer_response
from alumia.gateway.responses_request import chat_view, messages_of, parse_request

CATALOG = load_catalog()
OPENAI, ANTHROPIC, GEMINI = (CATALOG.providers[name] for name in ("openai", "anthropic", "gemini"))
MISTRAL = CATALOG.providers["mistral"]


def view(body: dict[str, Any], provider: Any = OPENAI, history: list[dict[str, Any]] | None = None) -> dict:
    return chat_view(parse_request({"model": "m", "input": "hi", **body}), history or [], provider)


def refused(body: dict[str, Any], provider: Any = OPENAI) -> AppError:
    with pytest.raises(AppError) as raised:
        view(body, provider)
    return raised.value


def test_items_become_chat_messages_with_calls_joined_to_their_assistant_turn() -> None:
    request = parse_request({"model": "m", "instructions": "rules", "input": [
        {"role": "developer", "content": "dev"},
        {"role": "user", "content": [{"type": "input_text", "text": "a"},
                                     {"type": "input_image", "image_url": "https://x/y.png"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "let me look"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"x\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
    ]})
    messages = chat_view(request, [], OPENAI)["messages"]
    assert messages == [
        {"role": "system", "content": "rules"},
        {"role": "system", "content": "dev"},
        {"role": "user", "content": [
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "auto"}}]},
        {"role": "assistant", "content": "let me look", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{\"x\":1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]
    assert all(item["id"] for item in request.items)  # every stored item has an id


def test_a_function_call_with_no_message_before_it_is_an_assistant_turn_of_its_own() -> None:
    assert messages_of([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]) == [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]


def test_history_goes_before_the_new_input_and_instructions_before_both() -> None:
    history = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "old"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "reply"}]}]
    messages = view({"instructions": "now"}, history=history)["messages"]
    assert [m["content"] for m in messages] == ["now", "old", "reply", "hi"]


def test_options_map_to_their_chat_fields() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
    out = view({"tools": [tool], "tool_choice": {"type": "function", "name": "f"},
                "parallel_tool_calls": False, "max_output_tokens": 7, "temperature": 0.5, "top_p": 0.9,
                "user": "u", "stream": True,
                "metadata": {"k": "v"}, "store": False, "truncation": "disabled", "include": [],
                "background": False})
    assert out["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"},
                                                              "strict": True}}]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert (out["parallel_tool_calls"], out["max_completion_tokens"], out["temperature"], out["top_p"],
            out["user"]) == (False, 7, 0.5, 0.9, "u")
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert "metadata" not in out and "store" not in out  # the gateway's own, not the provider's


def test_text_format_becomes_response_format_for_every_provider() -> None:
    schema = {"type": "object"}
    for provider in (OPENAI, ANTHROPIC, GEMINI):  # each provider's own way is the chat path's concern
        assert view({"text": {"format": {"type": "json_schema", "name": "n", "schema": schema}}}, provider)[
            "response_format"] == {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    assert view({"text": {"format": {"type": "json_object"}}})["response_format"] == {"type": "json_object"}
    assert "response_format" not in view({"text": {"format": {"type": "text"}}})


def test_reasoning_effort_becomes_the_chat_field_and_none_asks_nothing_where_there_is_no_control() -> None:
    for provider in (OPENAI, GEMINI, ANTHROPIC, MISTRAL):  # the chat path maps it, or refuses it
        assert view({"reasoning": {"effort": "low"}}, provider)["reasoning_effort"] == "low"
    assert "reasoning_effort" not in view({"reasoning": {"effort": "none"}}, MISTRAL)
    assert view({"reasoning": {"effort": "none"}}, ANTHROPIC)["reasoning_effort"] == "none"  # thinking off


@pytest.mark.parametrize(("body", "named"), [
    ({"tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
    ({"background": True}, "background"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"truncation": "auto"}, "truncation"),
    ({"conversation": "conv_1", "prompt_cache_key": "k"}, "conversation, prompt_cache_key"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
])
def test_what_cannot_be_honoured_is_a_400_naming_it(body: dict[str, Any], named: str) -> None:
    error = refused(body)
    assert error.code == "BAD_REQUEST" and error.message.startswith(named)


@pytest.mark.parametrize(("body", "named"), [
    ({"input": []}, "input"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
])
def test_a_wrong_shape_is_a_422_naming_its_place(body: dict[str, Any], named: str) -> None:
    error = refused(body)
    assert error.code == "VALIDATION_ERROR" and error.message.startswith(named)


def completion(message: dict[str, Any], finish: str, usage: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"id": "c", "model": "m", "choices": [{"index": 0, "message": message,
                                                               "finish_reason": finish}],
                         "usage": usage or {"prompt_tokens": 5, "completion_tokens": 2,
                                            "prompt_tokens_details": {"cached_tokens": 3}}})


def test_an_answer_becomes_a_response_with_its_usage_and_status() -> None:
    request = parse_request({"model": "m", "input": "hi"})
    done = answer_response(request, "resp_1", 1, completion({"content": "hello"}, "stop"), "openai")
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == "hello"
    assert done["usage"] == {"input_tokens": 5,
                             "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
                             "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": 7}
    cut = answer_response(request, "resp_2", 1, completion({"content": "hel"}, "length"), "openai")
    assert (cut["status"], cut["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    refusal = answer_response(request, "resp_3", 1, completion({"content": None, "refusal": "no"}, "stop"),
                              "openai")
    assert refusal["output"][0]["content"] == [{"type": "refusal", "refusal": "no"}]


def frame(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def events_of(data: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(event.split(b"\ndata: ", 1)[1]) for event in data]


def test_a_tool_call_after_text_closes_the_text_and_the_indexes_follow_the_output() -> None:
    stream = ResponseEventStream(parse_request({"model": "m", "input": "hi"}), "resp_1", 1, "openai")
    out = stream.start()
    opening = {"index": 0, "id": "c1", "function": {"name": "f"}}
    for chunk in [{"choices": [{"delta": {"content": "a"}}]},
                  {"choices": [{"delta": {"tool_calls": [opening]}}]},
                  {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]},
                  {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
                  {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}]:
        out += stream.feed(frame(chunk))
    out += stream.feed(b"data: [DONE]\n\n")
    events = events_of(out)
    added = [(e["output_index"], e["item"]["type"]) for e in events
             if e["type"] == "response.output_item.added"]
    assert added == [(0, "message"), (1, "function_call")]
    assert [e["type"] for e in events].index("response.output_item.done") < \
        [e["type"] for e in events].index("response.function_call_arguments.delta")  # text closed first
    final = events[-1]
    assert final["type"] == "response.completed" and stream.final == final["response"]
    assert [item["type"] for item in final["response"]["output"]] == ["message", "function_call"]
    assert final["response"]["output"][1]["arguments"] == "{}"
    assert final["response"]["usage"]["total_tokens"] == 3


def test_an_error_frame_or_a_stream_that_just_stops_ends_the_response_failed() -> None:
    request = parse_request({"model": "m", "input": "hi"})
    errored = ResponseEventStream(request, "resp_1", 1, "openai")
    events = events_of(errored.feed(frame({"choices": [{"delta": {"content": "a"}}]}))
                       + errored.feed(frame({"error": {"message": "boom"}})))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "boom"}
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"
    assert errored.feed(frame({"choices": [{"delta": {"content": "late"}}]})) == []  # nothing after the end
    stopped = ResponseEventStream(request, "resp_2", 1, "openai")
    stopped.feed(frame({"choices": [{"delta": {"content": "a"}}]}))
    assert events_of(stopped.close())[-1]["type"] == "response.failed"

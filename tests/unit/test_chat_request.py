"""The chat request check (services/chat_request.py): each bad shape is a 422 naming its field."""

import orjson
import pytest

from alumia.config import Settings
from alumia.errors import AppError
from alumia.services.chat_request import RequestLimits, parse_chat_request

HI = [{"role": "user", "content": "hi"}]
SECRET = "secret-value-7f3a"  # placed in each bad value: no message may echo it


def parse(body: dict, limits: RequestLimits = RequestLimits()):
    return parse_chat_request(orjson.dumps(body), limits)


def refused(body: dict, limits: RequestLimits = RequestLimits()) -> str:
    with pytest.raises(AppError) as raised:
        parse(body, limits)
    assert (raised.value.code, raised.value.status) == ("VALIDATION_ERROR", 422)
    assert SECRET not in raised.value.message
    return raised.value.message


def with_messages(*messages: dict) -> dict:
    return {"model": "m", "messages": list(messages)}


def user(content: object) -> dict:
    return {"role": "user", "content": content}


def text_parts(n: int) -> list[dict]:
    return [{"type": "text", "text": "x"}] * n


FULL = {
    "model": "gpt-5.6-luna",
    "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "system", "content": "you help", "name": "sys"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA==",
                                      "filename": "a.pdf"}}]},
        {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_2", "type": "custom", "custom": {"name": "g", "input": "x"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        {"role": "function", "name": "f", "content": None},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d", "strict": True,
                                                "parameters": {"type": "object", "properties": {}}}},
              {"type": "custom", "custom": {"name": "g", "format": {"type": "text"}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "parallel_tool_calls": False,
    "stop": ["END", "STOP"],
    "temperature": 0.2, "top_p": 1, "frequency_penalty": 0, "presence_penalty": -0.5, "seed": 7,
    "n": 2, "max_completion_tokens": 64, "max_tokens": 10,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "stream": True, "stream_options": {"include_usage": True},
    "user": "u-1", "metadata": {"a": "b"}, "logprobs": True, "top_logprobs": 2, "logit_bias": {"50": 1},
    "reasoning_effort": "low", "service_tier": "auto", "store": False, "modalities": ["text"],
    "some_provider_extension": {"anything": [1, 2]},
}


def test_a_full_valid_request_passes_and_is_read_once() -> None:
    raw = orjson.dumps(FULL)
    request = parse_chat_request(raw, RequestLimits())
    assert request.raw == raw and request.body == FULL
    assert (request.model, request.stream, request.include_usage) == ("gpt-5.6-luna", True, True)
    assert (request.max_output_tokens, request.choices) == (64, 2)


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": HI},
    {"model": "m", "messages": HI, "stream": None, "stream_options": None, "n": None, "stop": None,
     "tools": None, "tool_choice": None, "response_format": None, "temperature": None, "max_tokens": None},
    {"model": "m", "messages": HI, "tool_choice": "required", "stop": "END",
     "response_format": {"type": "text"}},
    {"model": "m", "messages": [{"role": "assistant", "content": "", "tool_calls": []}]},
    {"model": "m", "messages": HI, "tool_choice": {"type": "allowed_tools",
                                                   "allowed_tools": {"mode": "auto", "tools": []}}},
])
def test_good_bodies_pass(body: dict) -> None:
    request = parse(body)
    assert request.choices == (body.get("n") or 1) and request.stream is (body.get("stream") is True)


def test_the_output_limit_is_max_completion_tokens_else_max_tokens() -> None:
    assert parse({"model": "m", "messages": HI, "max_tokens": 9}).max_output_tokens == 9
    assert parse({"model": "m", "messages": HI, "max_completion_tokens": None,
                  "max_tokens": 9}).max_output_tokens == 9
    assert parse({"model": "m", "messages": HI}).max_output_tokens is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"model": 5}, "model: is required and must be a non-empty string"),
    ({"model": ""}, "model: is required and must be a non-empty string"),
    ({"messages": SECRET}, "messages: must be a non-empty array"),
    ({"messages": []}, "messages: must be a non-empty array"),
    ({"stream": SECRET}, "stream: must be a boolean"),
    ({"stream_options": SECRET}, "stream_options: must be an object"),
    ({"stream_options": {"include_usage": SECRET}}, "stream_options.include_usage: must be a boolean"),
    ({"max_tokens": 0}, "max_tokens: must be a positive integer"),
    ({"max_tokens": True}, "max_tokens: must be a positive integer"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens: must be a positive integer"),
    ({"n": 0}, "n: must be an integer from 1 to 128"),
    ({"n": 129}, "n: must be an integer from 1 to 128"),
    ({"n": "2"}, "n: must be an integer from 1 to 128"),
    ({"tools": "abc"}, "tools: must be an array"),
    ({"tools": [SECRET]}, "tools[0]: must be an object"),
    ({"tools": [{"function": {"name": "f"}}]}, "tools[0].type: must be function or custom"),
    ({"tools": [{"type": "function", "function": SECRET}]}, "tools[0].function: must be an object"),
    ({"tools": [{"type": "function", "function": {"name": 3}}]},
     "tools[0].function.name: must be a non-empty string"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": SECRET}}]},
     "tools[0].function.parameters: must be an object"),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": 1}}]},
     "tools[0].function.description: must be a string"),
    ({"tool_choice": SECRET}, "tool_choice: must be none, auto, required or an object naming a function"),
    ({"tool_choice": {"function": "x"}}, "tool_choice.type: must be function, custom or allowed_tools"),
    ({"tool_choice": {"type": "function", "function": SECRET}},
     "tool_choice.function: must be an object with a name"),
    ({"tool_choice": {"type": "function", "function": {"name": None}}},
     "tool_choice.function.name: must be a string"),
    ({"stop": 5}, "stop: must be a string or an array of 1 to 4 strings"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop: must be a string or an array of 1 to 4 strings"),
    ({"stop": ["a", 1]}, "stop: must be a string or an array of 1 to 4 strings"),
    ({"stop": []}, "stop: must be a string or an array of 1 to 4 strings"),
    ({"temperature": SECRET}, "temperature: must be a number"),
    ({"top_p": True}, "top_p: must be a number"),
    ({"seed": 1.5}, "seed: must be an integer"),
    ({"user": 5}, "user: must be a string"),
    ({"metadata": {"a": 1}}, "metadata: must be an object of strings"),
    ({"parallel_tool_calls": SECRET}, "parallel_tool_calls: must be a boolean"),
    ({"response_format": SECRET},
     "response_format: must be an object with type text, json_object or json_schema"),
    ({"response_format": {"type": [SECRET]}},
     "response_format: must be an object with type text, json_object or json_schema"),
    ({"tool_choice": {"type": [SECRET]}}, "tool_choice.type: must be function, custom or allowed_tools"),
    ({"response_format": {"type": "json_schema", "json_schema": SECRET}},
     "response_format.json_schema: must be an object"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SECRET}}},
     "response_format.json_schema.schema: must be an object"),
])
def test_each_bad_top_level_field_is_named(fields: dict, message: str) -> None:
    assert refused({"model": "m", "messages": HI, **fields}) == message


@pytest.mark.parametrize(("message", "error"), [
    (SECRET, "messages[1]: must be an object"),
    ({"role": SECRET, "content": "x"},
     "messages[1].role: must be one of system, developer, user, assistant, tool, function"),
    ({"content": "x"}, "messages[1].role: must be one of system, developer, user, assistant, tool, function"),
    ({"role": [], "content": "x"},
     "messages[1].role: must be one of system, developer, user, assistant, tool, function"),
    ({"role": "user", "content": [{"type": {}}]},
     "messages[1].content[0].type: must be one of text, image_url, input_audio, file, refusal"),
    ({"role": "user"}, "messages[1].content: is required"),
    ({"role": "user", "content": 5}, "messages[1].content: must be a string or an array of content parts"),
    ({"role": "user", "content": {"text": SECRET}},
     "messages[1].content: must be a string or an array of content parts"),
    ({"role": "user", "content": []}, "messages[1].content: must not be an empty array"),
    ({"role": "user", "content": [{"type": "text", "text": None}]},
     "messages[1].content[0].text: must be a string"),
    ({"role": "user", "content": [{"type": "text", "text": [SECRET]}]},
     "messages[1].content[0].text: must be a string"),
    ({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": 5}]},
     "messages[1].content[1].text: must be a string"),
    ({"role": "user", "content": [{"type": "text"}]}, "messages[1].content[0].text: must be a string"),
    ({"role": "user", "content": [SECRET]}, "messages[1].content[0]: must be an object"),
    ({"role": "user", "content": [{"type": SECRET}]},
     "messages[1].content[0].type: must be one of text, image_url, input_audio, file, refusal"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": SECRET}]},
     "messages[1].content[0].image_url: must be an object with a url"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": 1}}]},
     "messages[1].content[0].image_url.url: must be a string"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "A"}}]},
     "messages[1].content[0].input_audio.format: must be a string"),
    ({"role": "user", "content": [{"type": "file", "file": {"file_data": 1}}]},
     "messages[1].content[0].file.file_data: must be a string"),
    ({"role": "user", "content": "x", "name": 1}, "messages[1].name: must be a string"),
    ({"role": "assistant", "content": [{"type": "refusal", "refusal": None}]},
     "messages[1].content[0].refusal: must be a string"),
    ({"role": "assistant", "tool_calls": SECRET}, "messages[1].tool_calls: must be an array"),
    ({"role": "assistant", "tool_calls": [SECRET]}, "messages[1].tool_calls[0]: must be an object"),
    ({"role": "assistant", "tool_calls": [{"type": "function",
                                           "function": {"name": "f", "arguments": "{}"}}]},
     "messages[1].tool_calls[0].id: must be a string"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": SECRET}]},
     "messages[1].tool_calls[0].function: must be an object"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]},
     "messages[1].tool_calls[0].function.arguments: must be a string"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "type": SECRET}]},
     "messages[1].tool_calls[0].type: must be function or custom"),
    ({"role": "assistant", "content": None, "refusal": 1}, "messages[1].refusal: must be a string"),
    ({"role": "tool", "content": "x"}, "messages[1].tool_call_id: must be a string"),
    ({"role": "tool", "content": "x", "tool_call_id": 5}, "messages[1].tool_call_id: must be a string"),
    ({"role": "function", "content": "x"}, "messages[1].name: must be a string"),
])
def test_each_bad_message_shape_is_named(message: object, error: str) -> None:
    assert refused(with_messages(HI[0], message)) == error


def test_the_number_of_messages_is_limited() -> None:
    limits = RequestLimits(max_messages=3)
    assert parse(with_messages(*HI * 3), limits).body["messages"] == HI * 3
    assert refused(with_messages(*HI * 4), limits) == \
        "messages: at most 3 messages are allowed in one request"


def test_the_number_of_content_parts_in_the_whole_request_is_limited() -> None:
    limits = RequestLimits(max_content_parts=5)
    fits = with_messages(user(text_parts(3)), user(text_parts(2)))
    assert parse(fits, limits).model == "m"
    over = with_messages(user(text_parts(3)), user(text_parts(3)))
    assert refused(over, limits) == "messages[1].content: too many content parts in this request"


def test_the_default_limits_are_far_above_a_real_agent() -> None:
    assert RequestLimits() == RequestLimits(max_messages=2_048, max_content_parts=8_192,
                                            max_body_bytes=8 * 1024 * 1024)
    assert len(parse(with_messages(*HI * 2_048)).body["messages"]) == 2_048
    assert refused(with_messages(*HI * 2_049)).startswith("messages: at most 2048")


def test_an_oversized_body_is_413_before_it_is_parsed() -> None:
    with pytest.raises(AppError) as raised:
        parse_chat_request(b"x" * 101, RequestLimits(max_body_bytes=100))
    assert (raised.value.code, raised.value.status) == ("PAYLOAD_TOO_LARGE", 413)


def test_the_settings_give_the_limits() -> None:
    settings = Settings.from_env({"ALUMIA_MAX_MESSAGES": "10", "ALUMIA_MAX_CONTENT_PARTS": "20"})
    assert settings.request_limits == RequestLimits(max_messages=10, max_content_parts=20)
    assert Settings.from_env({}).request_limits == RequestLimits()

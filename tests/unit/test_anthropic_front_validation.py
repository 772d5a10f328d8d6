"""The Anthropic front door's request check: each bad Messages shape is a 422 naming its field."""

import pytest

from alumia.errors import AppError
from alumia.gateway.anthropic_front import openai_request

HI = [{"role": "user", "content": "hi"}]
SECRET = "secret-value-7f3a"  # placed in each bad value: no message may echo it
WEATHER = {"name": "weather", "input_schema": {"type": "object", "properties": {}}}


def refused(**fields: object) -> str:
    body = {"model": "m", "max_tokens": 100, "messages": HI, **fields}
    with pytest.raises(AppError) as raised:
        openai_request(body)
    assert (raised.value.code, raised.value.status) == ("VALIDATION_ERROR", 422)
    assert SECRET not in raised.value.message
    return raised.value.message


def user(*blocks: object) -> list[dict]:
    return [{"role": "user", "content": list(blocks)}]


def assistant(*blocks: object) -> list[dict]:
    return [*HI, {"role": "assistant", "content": list(blocks)}]


@pytest.mark.parametrize(("fields", "message"), [
    ({"model": 5}, "model: is required and must be a non-empty string"),
    ({"messages": SECRET}, "messages: must be a non-empty array"),
    ({"max_tokens": "100"}, "max_tokens: is required and must be a positive integer"),
    ({"stream": SECRET}, "stream: must be a boolean"),
    ({"system": 5}, "system: must be a string or an array of text blocks"),
    ({"system": [{"type": "text", "text": None}]}, "system[0].text: must be a string"),
    ({"system": [SECRET]}, "system[0]: must be a text block"),
    ({"messages": [SECRET]}, "messages[0]: must be an object"),
    ({"messages": [{"role": SECRET, "content": "x"}]}, "messages[0].role: must be user or assistant"),
    ({"messages": [{"role": "user", "content": 5}]},
     "messages[0].content: must be a string or an array of content blocks"),
    ({"messages": [{"role": "user"}]}, "messages[0].content: must be a string or an array of content blocks"),
    ({"messages": user(SECRET)}, "messages[0].content[0]: must be a content block object with a type"),
    ({"messages": user({"type": "text", "text": None})}, "messages[0].content[0].text: must be a string"),
    ({"messages": user({"type": "text", "text": [SECRET]})}, "messages[0].content[0].text: must be a string"),
    ({"messages": user({"type": "text", "text": "a"}, {"type": "text", "text": 5})},
     "messages[0].content[1].text: must be a string"),
    ({"messages": user({"type": "image", "source": SECRET})},
     "messages[0].content[0].source: must be a base64 or url image source"),
    ({"messages": user({"type": "document", "source": {}})},
     "messages[0].content[0].type: is not a content block type this gateway supports"),
    ({"messages": user({"type": "tool_result", "tool_use_id": 5})},
     "messages[0].content[0].tool_use_id: must be a string"),
    ({"messages": user({"type": "tool_result", "tool_use_id": "t", "content": 5})},
     "messages[0].content[0].content: must be a string or an array of content blocks"),
    ({"messages": user({"type": "tool_result", "tool_use_id": "t",
                        "content": [{"type": "text", "text": 1}]})},
     "messages[0].content[0].content[0].text: must be a string"),
    ({"messages": user({"type": "tool_result", "tool_use_id": "t", "content": [SECRET]})},
     "messages[0].content[0].content[0]: must be a content block object with a type"),
    ({"messages": user({"type": "tool_result", "tool_use_id": "t", "is_error": SECRET})},
     "messages[0].content[0].is_error: must be a boolean"),
    ({"messages": assistant({"type": "tool_use", "id": 1, "name": "f"})},
     "messages[1].content[0].id: must be a string"),
    ({"messages": assistant({"type": "tool_use", "id": "t", "name": None})},
     "messages[1].content[0].name: must be a string"),
    ({"messages": assistant({"type": "tool_use", "id": "t", "name": "f", "input": SECRET})},
     "messages[1].content[0].input: must be an object"),
    ({"messages": assistant({"type": "text", "text": None})},
     "messages[1].content[0].text: must be a string"),
    ({"tools": "abc"}, "tools: must be an array"),
    ({"tools": [{"name": "f"}]}, "tools[0]: must be a custom tool with a name and an input_schema object"),
    ({"tools": [{**WEATHER, "description": 5}]}, "tools[0].description: must be a string"),
    ({"tools": [WEATHER], "tool_choice": {"function": "x"}},
     "tool_choice: must be {type: auto|any|none} or {type: tool, name}"),
    ({"tool_choice": SECRET}, "tool_choice: must be {type: auto|any|none} or {type: tool, name}"),
    ({"tool_choice": {"type": [SECRET]}}, "tool_choice: must be {type: auto|any|none} or {type: tool, name}"),
    ({"messages": [{"role": [SECRET], "content": "x"}]}, "messages[0].role: must be user or assistant"),
    ({"tools": [WEATHER], "tool_choice": {"type": "any", "disable_parallel_tool_use": SECRET}},
     "tool_choice.disable_parallel_tool_use: must be a boolean"),
    ({"stop_sequences": 5}, "stop_sequences: must be an array of at most 4 strings"),
    ({"stop_sequences": ["a", 5]}, "stop_sequences: must be an array of at most 4 strings"),
    ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences: must be an array of at most 4 strings"),
    ({"temperature": SECRET}, "temperature: must be a number"),
    ({"top_p": True}, "top_p: must be a number"),
    ({"top_k": 1.5}, "top_k: must be an integer"),
    ({"metadata": SECRET}, "metadata: must be an object"),
    ({"metadata": {"user_id": 5}}, "metadata.user_id: must be a string"),
])
def test_each_bad_shape_is_named(fields: dict, message: str) -> None:
    assert refused(**fields) == message


def test_good_optional_fields_pass_and_nulls_mean_absent() -> None:
    body = openai_request({"model": "m", "max_tokens": 5, "messages": HI, "tools": [], "stream": None,
                           "tool_choice": None, "stop_sequences": None, "metadata": None, "top_k": 3})
    assert body == {"model": "m", "messages": HI, "max_tokens": 5}

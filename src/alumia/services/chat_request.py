"""Checking a client's OpenAI chat request once, on the way in, before anything is priced or sent.

Every field an adapter (providers/*.py) or the stream relay reads is checked against the type
OpenAI's chat-completions schema gives it (`CreateChatCompletionRequest`), so a wrong shape is a 422
naming the field (`messages[2].content[0].text: must be a string`) and never an exception inside a
translation or a stream. Unknown top-level fields pass: OpenAI-format providers accept many of their
own. Messages never echo a value, only its place.

One pass over the body with plain type checks (`type(x) is str`: orjson yields exact built-in types),
since this runs on every call.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alumia.errors import AppError, ErrorCode
from alumia.json_body import json_object
from alumia.providers.base import ChatRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
TOOL_CHOICES = frozenset({"none", "auto", "required"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 128


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Bounds on one request's size, built once from Settings (`Settings.request_limits`).

    The message and content-part defaults are far above what a real agent sends (docs/behaviour.md
    "Request checks and limits") and keep the per-call work on a hostile body bounded;
    `max_body_bytes` is `ALUMIA_GATEWAY_BODY_LIMIT_BYTES`: the HTTP layer (http_limits.py) stops a
    larger body as it arrives; this check covers a body that came another way (the lab).
    """

    max_messages: int = 2_048
    max_content_parts: int = 8_192
    max_body_bytes: int = 8 * 1024 * 1024


def _bad(path: str, what: str) -> AppError:
    return AppError(ErrorCode.VALIDATION_ERROR, f"{path}: {what}")


def _is_str(value: Any) -> bool:
    return type(value) is str


def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is not an int here


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_object(value: Any) -> bool:
    return type(value) is dict


def _is_str_map(value: Any) -> bool:
    return type(value) is dict and all(type(v) is str for v in value.values())


def _is_str_list(value: Any) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


# Optional top-level fields of simple types; null is accepted for each (OpenAI marks them nullable).
_SCALARS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("temperature", _is_number, "must be a number"),
    ("top_p", _is_number, "must be a number"),
    ("frequency_penalty", _is_number, "must be a number"),
    ("presence_penalty", _is_number, "must be a number"),
    ("seed", _is_int, "must be an integer"),
    ("top_logprobs", _is_int, "must be an integer"),
    ("logprobs", _is_bool, "must be a boolean"),
    ("store", _is_bool, "must be a boolean"),
    ("parallel_tool_calls", _is_bool, "must be a boolean"),
    ("user", _is_str, "must be a string"),
    ("safety_identifier", _is_str, "must be a string"),
    ("prompt_cache_key", _is_str, "must be a string"),
    ("prompt_cache_retention", _is_str, "must be a string"),
    ("reasoning_effort", _is_str, "must be a string"),
    ("service_tier", _is_str, "must be a string"),
    ("verbosity", _is_str, "must be a string"),
    ("logit_bias", _is_object, "must be an object"),
    ("metadata", _is_str_map, "must be an object of strings"),
    ("modalities", _is_str_list, "must be an array of strings"),
)


# --- content parts --------------------------------------------------------------------------------
# On the hot path a field's path is only formatted once it is wrong: `where` below is a message's
# index, turned into `messages[2]...` in the error branch.


def _require_str(obj: dict[str, Any], name: str, path: str) -> None:
    if type(obj.get(name)) is not str:
        raise _bad(f"{path}.{name}", "must be a string")


def _optional_str(obj: dict[str, Any], name: str, path: str) -> None:
    value = obj.get(name)
    if value is not None and type(value) is not str:
        raise _bad(f"{path}.{name}", "must be a string")


def _part_fields(part: dict[str, Any], kind: Any, path: str) -> None:
    """The fields of a part whose type is not text: checked off the common path, so paths are built."""
    if kind == "image_url":
        image = part.get("image_url")
        if type(image) is not dict:
            raise _bad(f"{path}.image_url", "must be an object with a url")
        _require_str(image, "url", f"{path}.image_url")
        _optional_str(image, "detail", f"{path}.image_url")
    elif kind == "input_audio":
        audio = part.get("input_audio")
        if type(audio) is not dict:
            raise _bad(f"{path}.input_audio", "must be an object with data and format")
        _require_str(audio, "data", f"{path}.input_audio")
        _require_str(audio, "format", f"{path}.input_audio")
    elif kind == "file":
        file = part.get("file")
        if type(file) is not dict:
            raise _bad(f"{path}.file", "must be an object")
        for name in ("file_data", "file_id", "filename"):
            _optional_str(file, name, f"{path}.file")
    elif kind == "refusal":
        _require_str(part, "refusal", path)
    else:
        raise _bad(f"{path}.type", "must be one of text, image_url, input_audio, file, refusal")


def _parts(content: list[Any], where: int) -> None:
    """Each part an object with a known type and that type's fields."""
    for j, part in enumerate(content):
        if type(part) is dict:
            kind = part.get("type")
            if kind == "text":
                if type(part.get("text")) is str:
                    continue
                raise _bad(f"messages[{where}].content[{j}].text", "must be a string")
            _part_fields(part, kind, f"messages[{where}].content[{j}]")
        else:
            raise _bad(f"messages[{where}].content[{j}]", "must be an object")


def _content(content: Any, where: int, nullable: bool, budget: int) -> int:
    """Check one message's content; the content-part budget left afterwards."""
    if type(content) is str:
        return budget
    if content is None:
        if nullable:
            return budget
        raise _bad(f"messages[{where}].content", "is required")
    if type(content) is not list:
        raise _bad(f"messages[{where}].content", "must be a string or an array of content parts")
    if not content:
        raise _bad(f"messages[{where}].content", "must not be an empty array")
    budget -= len(content)
    if budget < 0:
        raise _bad(f"messages[{where}].content", "too many content parts in this request")
    _parts(content, where)
    return budget


# --- messages -------------------------------------------------------------------------------------


def _tool_call(call: Any, path: str) -> None:
    if type(call) is not dict:
        raise _bad(path, "must be an object")
    _require_str(call, "id", path)
    kind = call.get("type", "function")
    if kind not in ("function", "custom"):
        raise _bad(f"{path}.type", "must be function or custom")
    inner = call.get(kind)
    if type(inner) is not dict:
        raise _bad(f"{path}.{kind}", "must be an object")
    _require_str(inner, "name", f"{path}.{kind}")
    _require_str(inner, "arguments" if kind == "function" else "input", f"{path}.{kind}")


def _tool_calls(calls: Any, where: int) -> None:
    if calls is None:
        return
    if type(calls) is not list:
        raise _bad(f"messages[{where}].tool_calls", "must be an array")
    for j, call in enumerate(calls):
        # The common shape is checked inline; anything else is checked again with its path.
        if type(call) is dict and type(call.get("id")) is str and call.get("type", "function") == "function":
            function = call.get("function")
            if type(function) is dict and type(function.get("name")) is str \
                    and type(function.get("arguments")) is str:
                continue
        _tool_call(call, f"messages[{where}].tool_calls[{j}]")


def _assistant_fields(message: dict[str, Any], where: int) -> None:
    _tool_calls(message.get("tool_calls"), where)
    refusal = message.get("refusal")
    if refusal is not None and type(refusal) is not str:
        raise _bad(f"messages[{where}].refusal", "must be a string")
    for name in ("function_call", "audio"):
        if message.get(name) is not None and type(message[name]) is not dict:
            raise _bad(f"messages[{where}].{name}", "must be an object")


def _message(message: Any, where: int, budget: int) -> int:
    """Check one message (the `where`-th); the content-part budget left afterwards."""
    if type(message) is not dict:
        raise _bad(f"messages[{where}]", "must be an object")
    role = message.get("role")
    if type(role) is not str or role not in ROLES:
        raise _bad(f"messages[{where}].role",
                   "must be one of system, developer, user, assistant, tool, function")
    name = message.get("name")
    if name is not None and type(name) is not str:
        raise _bad(f"messages[{where}].name", "must be a string")
    budget = _content(message.get("content"), where, role == "assistant" or role == "function", budget)
    if role == "assistant":
        _assistant_fields(message, where)
    elif role == "tool":
        if type(message.get("tool_call_id")) is not str:
            raise _bad(f"messages[{where}].tool_call_id", "must be a string")
    elif role == "function" and type(name) is not str:
        raise _bad(f"messages[{where}].name", "must be a string")
    return budget


def _messages(messages: Any, limits: RequestLimits) -> None:
    if type(messages) is not list or not messages:
        raise _bad("messages", "must be a non-empty array")
    if len(messages) > limits.max_messages:
        raise _bad("messages", f"at most {limits.max_messages} messages are allowed in one request")
    budget = limits.max_content_parts
    for i, message in enumerate(messages):
        budget = _message(message, i, budget)


# --- tools and the other fields -------------------------------------------------------------------


def _tools(tools: Any) -> None:
    if tools is None:
        return
    if type(tools) is not list:
        raise _bad("tools", "must be an array")
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        if type(tool) is not dict:
            raise _bad(at, "must be an object")
        kind = tool.get("type")
        if kind not in ("function", "custom"):
            raise _bad(f"{at}.type", "must be function or custom")
        inner = tool.get(kind)
        if type(inner) is not dict:
            raise _bad(f"{at}.{kind}", "must be an object")
        if type(inner.get("name")) is not str or not inner["name"]:
            raise _bad(f"{at}.{kind}.name", "must be a non-empty string")
        _optional_str(inner, "description", f"{at}.{kind}")
        if kind == "function":
            if inner.get("parameters") is not None and type(inner["parameters"]) is not dict:
                raise _bad(f"{at}.function.parameters", "must be an object")
            if inner.get("strict") is not None and type(inner["strict"]) is not bool:
                raise _bad(f"{at}.function.strict", "must be a boolean")
        elif inner.get("format") is not None and type(inner["format"]) is not dict:
            raise _bad(f"{at}.custom.format", "must be an object")


def _tool_choice(choice: Any) -> None:
    if choice is None or (type(choice) is str and choice in TOOL_CHOICES):
        return
    what = "must be none, auto, required or an object naming a function"
    if type(choice) is not dict:
        raise _bad("tool_choice", what)
    kind = choice.get("type")
    if kind in ("function", "custom"):
        inner = choice.get(kind)
        if type(inner) is not dict:
            raise _bad(f"tool_choice.{kind}", "must be an object with a name")
        _require_str(inner, "name", f"tool_choice.{kind}")
    elif kind == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if type(allowed) is not dict or type(allowed.get("tools")) is not list:
            raise _bad("tool_choice.allowed_tools", "must be an object with a tools array")
        _require_str(allowed, "mode", "tool_choice.allowed_tools")
    else:
        raise _bad("tool_choice.type", "must be function, custom or allowed_tools")


def _stop(stop: Any) -> None:
    if stop is None or type(stop) is str:
        return
    if type(stop) is not list or not 1 <= len(stop) <= MAX_STOP_SEQUENCES or not _is_str_list(stop):
        raise _bad("stop", f"must be a string or an array of 1 to {MAX_STOP_SEQUENCES} strings")


def _response_format(value: Any) -> None:
    if value is None:
        return
    if type(value) is not dict or type(value.get("type")) is not str or value["type"] not in RESPONSE_FORMATS:
        raise _bad("response_format", "must be an object with type text, json_object or json_schema")
    if value["type"] == "json_schema":
        schema = value.get("json_schema")
        if type(schema) is not dict:
            raise _bad("response_format.json_schema", "must be an object")
        _require_str(schema, "name", "response_format.json_schema")
        if schema.get("schema") is not None and type(schema["schema"]) is not dict:
            raise _bad("response_format.json_schema.schema", "must be an object")


def _positive_int(body: dict[str, Any], name: str, ceiling: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 1 or (ceiling is not None and value > ceiling):
        bound = f"an integer from 1 to {ceiling}" if ceiling else "a positive integer"
        raise _bad(name, f"must be {bound}")
    return value


def _stream_options(options: Any) -> bool:
    """Whether the client asked for a usage chunk."""
    if options is None:
        return False
    if type(options) is not dict:
        raise _bad("stream_options", "must be an object")
    for name in ("include_usage", "include_obfuscation"):
        if options.get(name) is not None and type(options[name]) is not bool:
            raise _bad(f"stream_options.{name}", "must be a boolean")
    return options.get("include_usage") is True


def parse_chat_request(raw: bytes, limits: RequestLimits = RequestLimits()) -> ChatRequest:
    """Parse and check the client's body once; VALIDATION_ERROR naming the field, never echoing it."""
    if len(raw) > limits.max_body_bytes:
        raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"request body is over {limits.max_body_bytes} bytes")
    body = json_object(raw)
    model = body.get("model")
    if type(model) is not str or not model:
        raise _bad("model", "is required and must be a non-empty string")
    _messages(body.get("messages"), limits)
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise _bad("stream", "must be a boolean")
    include_usage = _stream_options(body.get("stream_options"))
    max_completion = _positive_int(body, "max_completion_tokens")
    max_tokens = _positive_int(body, "max_tokens")
    choices = _positive_int(body, "n", MAX_CHOICES) or 1
    _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"))
    _stop(body.get("stop"))
    _response_format(body.get("response_format"))
    for name, check, what in _SCALARS:
        value = body.get(name)
        if value is not None and not check(value):
            raise _bad(name, what)
    return ChatRequest(raw=raw, body=body, model=model, stream=stream is True, include_usage=include_usage,
                       max_output_tokens=max_completion if max_completion is not None else max_tokens,
                       choices=choices)

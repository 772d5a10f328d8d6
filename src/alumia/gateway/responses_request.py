"""The Responses front door's request, as pure translation to an OpenAI chat request.

`POST /v1/responses` reaches every provider through the gateway's chat-completions call
(services/proxy.complete): the request is checked once here (`parse_request`), the items of an earlier
stored conversation are put in front of its input, and the whole becomes one chat body (`chat_view`)
that the gateway routes, prices, holds for, sends and meters like any chat completion.

What crosses, and how:

* `input`, a string (one user message) or a list of items: `message` items (role user, system,
  developer or assistant; content a string or `input_text` / `input_image` (by URL) parts, assistant
  content `output_text` or `refusal` parts), `function_call` items (joined to the assistant turn
  before them as its tool calls) and `function_call_output` items (tool messages). Developer and system
  messages both become system messages, which every provider's translation reads as the system prompt.
* `instructions` is a system message before everything else; it is not carried into a later turn
  (as OpenAI documents: each request states its own).
* function `tools`, `tool_choice` (auto, none, required, or a named function), `parallel_tool_calls`,
  `temperature`, `top_p`, `user` / `safety_identifier`, `max_output_tokens` (the chat
  `max_completion_tokens`, which the gateway sends as each provider's own limit field).
* `text.format`: `json_schema` becomes the chat `response_format` json_schema, `json_object` too,
  `text` nothing; the chat path sends it on in each provider's own way (Claude's structured output,
  Gemini's response schema) or refuses it (providers/features.py), named as `text.format`.
* `reasoning.effort` becomes `reasoning_effort`, which the chat path maps per provider (Claude's
  thinking budget, Gemini's, the OpenAI-format field) or refuses, named as `reasoning.effort`;
  `none` on a provider without a reasoning control asks for nothing and is left out.

Everything else is refused by name with a 400, never dropped: built-in tools (web search, file search,
...), `background`, `include`, `truncation` other than disabled, `conversation`, `prompt`, reasoning
summaries, and any field this door does not know. Shapes that are wrong are 422s naming their place,
as on the other doors; no message echoes a value.
"""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alumia.domain.catalog import Provider
from alumia.errors import AppError, ErrorCode

# Fields this door carries (or answers itself). Anything else present and not null is refused by name.
FIELDS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "text", "max_output_tokens", "reasoning",
    "temperature", "top_p", "metadata", "parallel_tool_calls", "user", "safety_identifier", "stream",
    "store", "previous_response_id", "include", "truncation", "background", "stream_options",
})
MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
TOOL_CHOICES = frozenset({"auto", "none", "required"})
EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
MAX_METADATA_KEYS = 16  # OpenAI's bounds on metadata
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def _invalid(path: str, what: str) -> AppError:
    return AppError(ErrorCode.VALIDATION_ERROR, f"{path}: {what}")


def _unsupported(path: str, what: str) -> AppError:
    return AppError(ErrorCode.BAD_REQUEST, f"{path}: {what}")


def new_id(prefix: str) -> str:
    """An OpenAI-style object id: `resp_`, `msg_`, `fc_`... and 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """One checked Responses request: what goes upstream, and what its Response object repeats."""

    model: str  # as the client named it
    items: tuple[dict[str, Any], ...]  # this request's input, as items with ids (what input_items lists)
    instructions: str | None
    tools: tuple[dict[str, Any], ...]  # function tools, in Responses' shape
    tool_choice: Any  # Responses' shape; "auto" when absent
    text: dict[str, Any]  # {"format": {...}}
    effort: str | None
    temperature: float | None
    top_p: float | None
    max_output_tokens: int | None
    parallel_tool_calls: bool | None
    metadata: dict[str, str]
    user: str | None
    safety_identifier: str | None
    stream: bool
    store: bool
    previous_response_id: str | None


# --- input items ----------------------------------------------------------------------------------


def _text_of(part: dict[str, Any], where: str) -> str:
    text = part.get("text")
    if type(text) is not str:
        raise _invalid(f"{where}.text", "must be a string")
    return text


def _user_part(part: Any, where: str) -> dict[str, Any]:
    """A user, system or developer content part, as the item stores it."""
    if type(part) is not dict:
        raise _invalid(where, "must be an object")
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "input_text", "text": _text_of(part, where)}
    if kind == "input_image":
        url = part.get("image_url")
        if part.get("file_id") is not None or type(url) is not str:
            raise _unsupported(f"{where}.image_url", "an input_image needs an image_url (a URL or a data "
                               "URL); file ids are not supported by this gateway")
        detail = part.get("detail", "auto")
        if detail not in ("auto", "low", "high"):
            raise _invalid(f"{where}.detail", "must be auto, low or high")
        return {"type": "input_image", "image_url": url, "detail": detail}
    raise _unsupported(f"{where}.type", "must be input_text or input_image; other content types (files, "
                       "audio) are not supported by this gateway")


def _assistant_part(part: Any, where: str) -> dict[str, Any]:
    if type(part) is not dict:
        raise _invalid(where, "must be an object")
    kind = part.get("type")
    if kind in ("output_text", "input_text"):
        return {"type": "output_text", "text": _text_of(part, where), "annotations": [], "logprobs": []}
    if kind == "refusal":
        refusal = part.get("refusal")
        if type(refusal) is not str:
            raise _invalid(f"{where}.refusal", "must be a string")
        return {"type": "refusal", "refusal": refusal}
    raise _unsupported(f"{where}.type", "an assistant message's parts must be output_text or refusal")


def _message_item(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise _invalid(f"{where}.role", "must be user, system, developer or assistant")
    content = item.get("content")
    assistant = role == "assistant"
    if type(content) is str:
        parts = [{"type": "output_text", "text": content, "annotations": [], "logprobs": []} if assistant
                 else {"type": "input_text", "text": content}]
    elif type(content) is list:
        read = _assistant_part if assistant else _user_part
        parts = [read(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    else:
        raise _invalid(f"{where}.content", "must be a string or an array of content parts")
    return {"id": _item_id(item, "msg"), "type": "message", "role": role, "content": parts,
            "status": "completed"}


def _item_id(item: dict[str, Any], prefix: str) -> str:
    given = item.get("id")
    return given if type(given) is str and given else new_id(prefix)


def _function_call_item(item: dict[str, Any], where: str) -> dict[str, Any]:
    for name in ("call_id", "name", "arguments"):
        if type(item.get(name)) is not str:
            raise _invalid(f"{where}.{name}", "must be a string")
    return {"id": _item_id(item, "fc"), "type": "function_call", "call_id": item["call_id"],
            "name": item["name"], "arguments": item["arguments"], "status": "completed"}


def _function_output_item(item: dict[str, Any], where: str) -> dict[str, Any]:
    if type(item.get("call_id")) is not str:
        raise _invalid(f"{where}.call_id", "must be a string")
    output = item.get("output")
    if type(output) is list:
        texts = []
        for j, part in enumerate(output):
            if type(part) is not dict or part.get("type") != "input_text":
                raise _unsupported(f"{where}.output[{j}].type", "a function output's parts must be "
                                   "input_text here; images and files in tool results are not supported")
            texts.append(_text_of(part, f"{where}.output[{j}]"))
        output = "".join(texts)
    elif type(output) is not str:
        raise _invalid(f"{where}.output", "must be a string or an array of input_text parts")
    return {"id": _item_id(item, "fco"), "type": "function_call_output", "call_id": item["call_id"],
            "output": output, "status": "completed"}


def _items(value: Any) -> tuple[dict[str, Any], ...]:
    if type(value) is str:
        return ({"id": new_id("msg"), "type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": value}], "status": "completed"},)
    if type(value) is not list or not value:
        raise _invalid("input", "must be a string or a non-empty array of input items")
    items = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if type(item) is not dict:
            raise _invalid(where, "must be an object")
        # An EasyInputMessage has a role and content and may leave its type out.
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            items.append(_message_item(item, where))
        elif kind == "function_call":
            items.append(_function_call_item(item, where))
        elif kind == "function_call_output":
            items.append(_function_output_item(item, where))
        else:
            raise _unsupported(f"{where}.type", "must be message, function_call or function_call_output; "
                               "other items (reasoning, item references, built-in tool calls) are not "
                               "supported by this gateway")
    return tuple(items)


# --- tools and options ----------------------------------------------------------------------------


def _tools(value: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise _invalid("tools", "must be an array")
    tools = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if type(tool) is not dict:
            raise _invalid(where, "must be an object")
        if tool.get("type") != "function":
            raise _unsupported(f"{where}.type", "only function tools are supported by this gateway; "
                               "built-in tools (web search, file search, code interpreter, ...) are not")
        if type(tool.get("name")) is not str or not tool["name"]:
            raise _invalid(f"{where}.name", "must be a non-empty string")
        description, parameters, strict = tool.get("description"), tool.get("parameters"), tool.get("strict")
        if description is not None and type(description) is not str:
            raise _invalid(f"{where}.description", "must be a string")
        if parameters is not None and type(parameters) is not dict:
            raise _invalid(f"{where}.parameters", "must be an object")
        if strict is not None and type(strict) is not bool:
            raise _invalid(f"{where}.strict", "must be a boolean")
        tools.append({"type": "function", "name": tool["name"], "description": description,
                      "parameters": parameters, "strict": strict})
    return tuple(tools)


def _tool_choice(value: Any) -> Any:
    if value is None:
        return "auto"
    if type(value) is str and value in TOOL_CHOICES:
        return value
    if type(value) is dict and value.get("type") == "function":
        if type(value.get("name")) is not str:
            raise _invalid("tool_choice.name", "must be a string")
        return {"type": "function", "name": value["name"]}
    if type(value) is dict:
        raise _unsupported("tool_choice.type", "must be function; choosing built-in tools, MCP tools or "
                           "allowed_tools is not supported by this gateway")
    raise _invalid("tool_choice", "must be auto, none, required or {type: function, name}")


def _text(value: Any) -> dict[str, Any]:
    if value is None:
        return {"format": {"type": "text"}}
    if type(value) is not dict:
        raise _invalid("text", "must be an object")
    unknown = sorted(set(value) - {"format"})
    if unknown:
        raise _unsupported(f"text.{unknown[0]}", "is not supported by this gateway")
    fmt = value.get("format") or {"type": "text"}
    kind = fmt.get("type") if type(fmt) is dict else None
    if kind in ("text", "json_object"):
        return {"format": {"type": kind}}
    if kind != "json_schema":
        raise _invalid("text.format", "must be {type: text}, {type: json_object} or "
                       "{type: json_schema, name, schema}")
    if type(fmt.get("name")) is not str or not fmt["name"]:
        raise _invalid("text.format.name", "must be a non-empty string")
    if type(fmt.get("schema")) is not dict:
        raise _invalid("text.format.schema", "must be an object")
    for name, kind_ in (("description", str), ("strict", bool)):
        if fmt.get(name) is not None and type(fmt[name]) is not kind_:
            raise _invalid(f"text.format.{name}", f"must be a {'string' if kind_ is str else 'boolean'}")
    out = {"type": "json_schema", "name": fmt["name"], "schema": fmt["schema"]}
    for name in ("description", "strict"):
        if fmt.get(name) is not None:
            out[name] = fmt[name]
    return {"format": out}


def _effort(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _invalid("reasoning", "must be an object")
    if value.get("summary") is not None or value.get("generate_summary") is not None:
        raise _unsupported("reasoning.summary", "reasoning summaries are not supported by this gateway")
    unknown = sorted(set(value) - {"effort", "summary", "generate_summary"})
    if unknown:
        raise _unsupported(f"reasoning.{unknown[0]}", "is not supported by this gateway")
    effort = value.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise _invalid("reasoning.effort", "must be none, minimal, low, medium, high or xhigh")
    return effort


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is not dict or len(value) > MAX_METADATA_KEYS:
        raise _invalid("metadata", f"must be an object of at most {MAX_METADATA_KEYS} strings")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY or type(item) is not str or len(item) > MAX_METADATA_VALUE:
            raise _invalid("metadata", f"keys must be at most {MAX_METADATA_KEY} characters and values "
                           f"strings of at most {MAX_METADATA_VALUE}")
    return dict(value)


def _optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is not None and (type(value) not in (kind if isinstance(kind, tuple) else (kind,))):
        raise _invalid(name, what)
    return value


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """BAD_REQUEST naming every field this door cannot honour (module docstring)."""
    refused = sorted(name for name, value in body.items() if name not in FIELDS and value is not None)
    if body.get("background"):
        refused.append("background")
    if body.get("include"):
        refused.append("include")
    if body.get("truncation") not in (None, "disabled"):
        refused.append("truncation")
    if refused:
        raise _unsupported(", ".join(refused), "not supported by this gateway's Responses API (docs/"
                           "providers.md \"Responses\"); leave them out")


def parse_request(body: dict[str, Any]) -> ResponsesRequest:
    """The checked request; BAD_REQUEST (400) naming what is not supported, VALIDATION_ERROR (422) for a
    wrong shape."""
    _refuse_unsupported(body)
    model = body.get("model")
    if type(model) is not str or not model:
        raise _invalid("model", "is required and must be a non-empty string")
    max_output = body.get("max_output_tokens")
    if max_output is not None and (type(max_output) is not int or max_output < 1):
        raise _invalid("max_output_tokens", "must be a positive integer")
    for name in ("temperature", "top_p"):
        _optional(body, name, (int, float), "must be a number")
    previous = _optional(body, "previous_response_id", str, "must be a string")
    store = _optional(body, "store", bool, "must be a boolean")
    return ResponsesRequest(
        model=model, items=_items(body.get("input")),
        instructions=_optional(body, "instructions", str, "must be a string"),
        tools=_tools(body.get("tools")), tool_choice=_tool_choice(body.get("tool_choice")),
        text=_text(body.get("text")), effort=_effort(body.get("reasoning")),
        temperature=body.get("temperature"), top_p=body.get("top_p"), max_output_tokens=max_output,
        parallel_tool_calls=_optional(body, "parallel_tool_calls", bool, "must be a boolean"),
        metadata=_metadata(body.get("metadata")), user=_optional(body, "user", str, "must be a string"),
        safety_identifier=_optional(body, "safety_identifier", str, "must be a string"),
        stream=_optional(body, "stream", bool, "must be a boolean") is True,
        store=store is not False, previous_response_id=previous or None)


# --- the chat view --------------------------------------------------------------------------------


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part["type"] == "input_text" for part in parts):
        return "".join(part["text"] for part in parts)
    out: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] == "input_text":
            out.append({"type": "text", "text": part["text"]})
        else:
            image = {"url": part["image_url"], "detail": part["detail"]}
            out.append({"type": "image_url", "image_url": image})
    return out


def messages_of(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages for a conversation's items (input items and earlier outputs alike).

    An assistant message and the function calls after it are one assistant turn with tool calls, as
    chat completions have them; function calls with no message before them make a turn of their own.
    """
    out: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            if item["role"] == "assistant":
                text = "".join(p.get("text") or p.get("refusal") or "" for p in item["content"])
                out.append({"role": "assistant", "content": text})
            else:
                role = "user" if item["role"] == "user" else "system"
                out.append({"role": role, "content": _user_content(item["content"])})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if not last["content"]:
                    last["content"] = None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        # Other output items (none are made by this gateway today) carry nothing a chat model reads.
    return out


def _reasoning_effort(effort: str | None, provider: Provider | None) -> dict[str, Any]:
    if effort is None or (effort == "none" and provider is not None and provider.reasoning_control is None):
        return {}  # no reasoning asked for, where there is nothing to switch off
    return {"reasoning_effort": effort}


def _response_format(text: dict[str, Any], provider: Provider | None) -> dict[str, Any]:
    fmt = text["format"]
    if fmt["type"] == "text":
        return {}
    if fmt["type"] == "json_object":
        return {"response_format": {"type": "json_object"}}
    schema = {name: fmt[name] for name in ("name", "schema", "description", "strict") if name in fmt}
    return {"response_format": {"type": "json_schema", "json_schema": schema}}


def chat_view(request: ResponsesRequest, history: Sequence[dict[str, Any]],
              provider: Provider | None) -> dict[str, Any]:
    """The chat body for a request whose earlier conversation (stored items, oldest first) is `history`.

    `provider` is the model's (None for a model not in the catalog, which the gateway's call answers
    with its own 404); what a provider cannot take is a BAD_REQUEST naming the field.
    """
    messages = messages_of([*history, *request.items])
    if request.instructions is not None:
        messages.insert(0, {"role": "system", "content": request.instructions})
    out: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        out["tools"] = [{"type": "function", "function": {
            name: tool[name] for name in ("name", "description", "parameters", "strict")
            if tool[name] is not None}} for tool in request.tools]
        choice = request.tool_choice
        out["tool_choice"] = ({"type": "function", "function": {"name": choice["name"]}}
                              if isinstance(choice, dict) else choice)
    if request.parallel_tool_calls is not None and request.tools:
        out["parallel_tool_calls"] = request.parallel_tool_calls
    for name in ("temperature", "top_p", "user", "safety_identifier"):
        if (value := getattr(request, name)) is not None:
            out[name] = value
    if request.max_output_tokens is not None:
        out["max_completion_tokens"] = request.max_output_tokens
    out.update(_response_format(request.text, provider))
    out.update(_reasoning_effort(request.effort, provider))
    if request.stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out

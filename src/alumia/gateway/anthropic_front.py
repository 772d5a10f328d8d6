"""The Anthropic Messages front door, as pure translation (docs/providers.md, read backwards).

A client speaking Anthropic's Messages API (the official `anthropic` SDK) sends its request here; it is
turned into an OpenAI chat request and goes through the same gateway call as /v1/chat/completions, so
routing, billing and every provider behave the same. The answer — a chat.completion body or the
gateway's OpenAI chunk frames — is turned back into Anthropic's message and SSE events.

Claude itself is not reached through this translation: for an Anthropic-format model the door sends
the checked Messages body as it came and relays Anthropic's answer as it is
(providers/anthropic_native.py; the OpenAI view made here still sizes the hold and meters the call).
For every other model, what does not cross: `cache_control` marks are dropped (those providers cache
by themselves), `top_k` and `service_tier` too, and earlier thinking blocks (they are signed for
Claude and mean nothing to another model); `thinking` becomes the provider's reasoning control
(gateway/anthropic_thinking.py), and the reasoning text the provider returns comes back as thinking
blocks, without a signature, when thinking was asked for. `stop_sequence` is always null because an
OpenAI answer does not say which stop sequence matched (its stop_reason is end_turn).

`cache_control` is checked wherever it may stand (system blocks, content blocks, tools): an object of
type `ephemeral`, with a `ttl` of `5m` if any. One-hour cache writes cost twice the input price,
which the catalog does not carry, so they are refused rather than billed at the five-minute price.
"""

import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from alumia.errors import AppError, ErrorCode
from alumia.providers.anthropic_native import EVENT_KEY, MESSAGE_KEY, TEXT_BYTES_KEY
from alumia.providers.openai_answer import answer_text_bytes
from alumia.sse import event_frame

# OpenAI finish_reason -> Anthropic stop_reason; the inverse of providers.anthropic.FINISH_REASONS
# on the values both sides have. Unknown or missing reasons are end_turn.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
# Blocks an assistant turn can carry that have no OpenAI counterpart and mean nothing to another model.
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})

# Anthropic error types (anthropic.types.shared.ErrorType) by the HTTP status we answer with.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def stop_reason(finish_reason: str | None) -> str:
    """Anthropic's stop_reason for an OpenAI finish_reason; unknown or missing values are end_turn."""
    return STOP_REASONS.get(finish_reason or "", "end_turn")


def error_type(status: int) -> str:
    """The Anthropic error type for an HTTP status: 4xx not listed are invalid requests, 5xx api errors."""
    return _ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def error_body(error: AppError, request_id: str) -> dict[str, Any]:
    """Anthropic's error envelope for an AppError; `code` is ours, for clients that want the detail."""
    return {"type": "error",
            "error": {"type": error_type(error.status), "message": error.message, "code": error.code},
            "request_id": request_id}


# --- request ------------------------------------------------------------------------------------
# Each bad shape is a VALIDATION_ERROR (422) naming its field, `<path>: <what is wrong>`, as on chat
# completions (services/chat_request.py); a message never echoes a value.

MAX_STOP_SEQUENCES = 4  # the OpenAI request this becomes allows four `stop` strings


def _invalid(path: str, what: str) -> AppError:
    return AppError(ErrorCode.VALIDATION_ERROR, f"{path}: {what}")


def _positive_int(value: Any) -> bool:
    return type(value) is int and value >= 1


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _text(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if type(text) is not str:
        raise _invalid(f"{where}.text", "must be a string")
    return text


def _cache_control(holder: dict[str, Any], where: str) -> None:
    """Check a block's or tool's `cache_control`: ephemeral, for five minutes (the module's docstring)."""
    mark = holder.get("cache_control")
    if mark is None:
        return
    if type(mark) is not dict or mark.get("type") != "ephemeral":
        raise _invalid(f"{where}.cache_control", "must be {type: ephemeral}")
    if mark.get("ttl", "5m") != "5m":
        raise _invalid(f"{where}.cache_control.ttl", "must be 5m: one-hour cache writes are not priced")


def _thinking_block(block: dict[str, Any], where: str) -> None:
    """Check an earlier thinking block a client sends back (Claude checks its signature)."""
    fields = ("thinking", "signature") if block["type"] == "thinking" else ("data",)
    for name in fields:
        if type(block.get(name)) is not str:
            raise _invalid(f"{where}.{name}", "must be a string")


def _system_text(system: Any) -> str:
    if type(system) is str:
        return system
    if type(system) is not list:
        raise _invalid("system", "must be a string or an array of text blocks")
    for i, block in enumerate(system):
        if type(block) is not dict or block.get("type") != "text":
            raise _invalid(f"system[{i}]", "must be a text block")
        _text(block, f"system[{i}]")
        _cache_control(block, f"system[{i}]")
    # Anthropic reads consecutive system blocks as one prompt; a blank line keeps them apart.
    return "\n\n".join(block["text"] for block in system)


def _image_url(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if type(source) is dict:
        if source.get("type") == "base64" and type(source.get("data")) is str \
                and type(source.get("media_type")) is str:
            url = f"data:{source['media_type']};base64,{source['data']}"
            return {"type": "image_url", "image_url": {"url": url}}
        if source.get("type") == "url" and type(source.get("url")) is str:
            return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _invalid(f"{where}.source", "must be a base64 or url image source")


def _blocks_of(content: Any, where: str) -> list[dict[str, Any]]:
    if type(content) is str:
        return [{"type": "text", "text": content}]
    if type(content) is not list:
        raise _invalid(where, "must be a string or an array of content blocks")
    for i, block in enumerate(content):
        if type(block) is not dict or type(block.get("type")) is not str:
            raise _invalid(f"{where}[{i}]", "must be a content block object with a type")
        _cache_control(block, f"{where}[{i}]")
        if block["type"] in _DROPPED_BLOCKS:
            _thinking_block(block, f"{where}[{i}]")
    return content


def _tool_result_text(block: dict[str, Any], where: str) -> str:
    content = block.get("content")
    if content is None:
        text = ""
    elif type(content) is str:
        text = content
    elif type(content) is list:
        # An OpenAI tool message carries text only; images in a tool result cannot cross.
        texts = []
        for i, inner in enumerate(_blocks_of(content, f"{where}.content")):
            if inner["type"] == "text":
                texts.append(_text(inner, f"{where}.content[{i}]"))
        text = "\n".join(texts)
    else:
        raise _invalid(f"{where}.content", "must be a string or an array of content blocks")
    is_error = block.get("is_error")
    if is_error is not None and type(is_error) is not bool:
        raise _invalid(f"{where}.is_error", "must be a boolean")
    if is_error:
        return f"Error: {text}" if text else "Error"
    return text


def _unsupported(at: str) -> AppError:
    return _invalid(f"{at}.type", "is not a content block type this gateway supports")


def _user_messages(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as `tool` messages first, then the rest as one user message."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        at, kind = f"{where}[{i}]", block["type"]
        if kind == "tool_result":
            if type(block.get("tool_use_id")) is not str:
                raise _invalid(f"{at}.tool_use_id", "must be a string")
            tools.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                          "content": _tool_result_text(block, at)})
        elif kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
        elif kind == "image":
            parts.append(_image_url(block, at))
        elif kind not in _DROPPED_BLOCKS:
            raise _unsupported(at)
    if not parts:
        return tools
    # One text block is sent as a plain string, which every OpenAI-format provider accepts.
    content: str | list[dict[str, Any]] = (parts[0]["text"] if len(parts) == 1 and parts[0]["type"] == "text"
                                           else parts)
    return [*tools, {"role": "user", "content": content}]


def _assistant_message(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        at, kind = f"{where}[{i}]", block["type"]
        if kind == "text":
            texts.append(_text(block, at))
        elif kind == "tool_use":
            for name in ("id", "name"):
                if type(block.get(name)) is not str:
                    raise _invalid(f"{at}.{name}", "must be a string")
            tool_input = block.get("input")
            if tool_input is not None and type(tool_input) is not dict:
                raise _invalid(f"{at}.input", "must be an object")
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"],
                                       "arguments": orjson.dumps(tool_input or {}).decode()}})
        elif kind not in _DROPPED_BLOCKS:
            raise _unsupported(at)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if type(message) is not dict:
            raise _invalid(where, "must be an object")
        if message.get("role") not in ("user", "assistant"):
            raise _invalid(f"{where}.role", "must be user or assistant")
        blocks = _blocks_of(message.get("content"), f"{where}.content")
        if message["role"] == "user":
            out.extend(_user_messages(blocks, f"{where}.content"))
        else:
            out.append(_assistant_message(blocks, f"{where}.content"))
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if type(tools) is not list:
        raise _invalid("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        # Anthropic's server tools (web search, bash, ...) carry a versioned type and prices of their
        # own the gateway does not meter; only custom ones cross.
        if type(tool) is not dict or tool.get("type", "custom") != "custom" \
                or type(tool.get("name")) is not str or type(tool.get("input_schema")) is not dict:
            raise _invalid(f"tools[{i}]", "must be a custom tool with a name and an input_schema object")
        _cache_control(tool, f"tools[{i}]")
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        description = tool.get("description")
        if description is not None and type(description) is not str:
            raise _invalid(f"tools[{i}].description", "must be a string")
        if description is not None:
            function["description"] = description
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    """The OpenAI tool_choice (and parallel_tool_calls) for Anthropic's tool_choice."""
    kind = choice.get("type") if type(choice) is dict else None
    if type(kind) is str and kind in _TOOL_CHOICES:
        out: dict[str, Any] = {"tool_choice": _TOOL_CHOICES[kind]}
    elif kind == "tool" and type(choice.get("name")) is str:
        out = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    else:
        raise _invalid("tool_choice", "must be {type: auto|any|none} or {type: tool, name}")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and type(disable) is not bool:
        raise _invalid("tool_choice.disable_parallel_tool_use", "must be a boolean")
    if disable:
        out["parallel_tool_calls"] = False
    return out


def _stops(stops: Any) -> list[str]:
    if stops is None:
        return []
    if type(stops) is not list or len(stops) > MAX_STOP_SEQUENCES \
            or not all(type(s) is str for s in stops):
        raise _invalid("stop_sequences", f"must be an array of at most {MAX_STOP_SEQUENCES} strings")
    return stops


def _user_id(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if type(metadata) is not dict:
        raise _invalid("metadata", "must be an object")
    user_id = metadata.get("user_id")
    if user_id is not None and type(user_id) is not str:
        raise _invalid("metadata.user_id", "must be a string")
    return user_id or None


def openai_request(body: dict[str, Any], *, counting: bool = False) -> dict[str, Any]:
    """The OpenAI chat request for an Anthropic Messages request; VALIDATION_ERROR for a bad one.

    A streamed request always asks for usage: the closing message_delta reports it. `counting` reads
    a token-count request, which has no max_tokens (the view then has none either).
    """
    model = body.get("model")
    if type(model) is not str or not model:
        raise _invalid("model", "is required and must be a non-empty string")
    messages = body.get("messages")
    if type(messages) is not list or not messages:
        raise _invalid("messages", "must be a non-empty array")
    if not counting and not _positive_int(body.get("max_tokens")):
        raise _invalid("max_tokens", "is required and must be a positive integer")
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise _invalid("stream", "must be a boolean")

    out_messages = _messages(messages)
    if body.get("system") is not None:
        out_messages.insert(0, {"role": "system", "content": _system_text(body["system"])})
    out: dict[str, Any] = {"model": model, "messages": out_messages}
    if not counting:
        out["max_tokens"] = body["max_tokens"]
    tools = _tools(body["tools"]) if body.get("tools") is not None else []
    # Anthropic reads tool_choice only alongside tools; it is checked either way.
    choice = _tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else {}
    if tools:
        out["tools"] = tools
        out.update(choice)
    if stops := _stops(body.get("stop_sequences")):
        out["stop"] = stops
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not _is_number(value):
                raise _invalid(name, "must be a number")
            out[name] = value
    top_k = body.get("top_k")
    if top_k is not None and type(top_k) is not int:
        raise _invalid("top_k", "must be an integer")
    if user_id := _user_id(body.get("metadata")):
        out["user"] = user_id
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# --- response -----------------------------------------------------------------------------------


def _message_id(completion_id: Any) -> str:
    raw = completion_id if isinstance(completion_id, str) and completion_id else secrets.token_hex(12)
    raw = raw.removeprefix("chatcmpl-")
    # The Anthropic adapter names its completions chatcmpl-msg_...: do not stack the prefix.
    return raw if raw.startswith("msg_") else f"msg_{raw}"


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage for OpenAI usage: input_tokens leaves out the cache reads and writes."""
    usage = usage if isinstance(usage, Mapping) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    return {"input_tokens": max(0, int(usage.get("prompt_tokens") or 0) - cached - written),
            "output_tokens": int(usage.get("completion_tokens") or 0),
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": written}


def _tool_input(arguments: Any) -> dict[str, Any]:
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def anthropic_message(completion: dict[str, Any], *, thinking: bool = False) -> dict[str, Any]:
    """The Anthropic message for an OpenAI chat.completion (its first choice).

    With `thinking` (the client asked for it) the provider's reasoning text comes first, as a thinking
    block; it has no signature, which only Claude gives.
    """
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if thinking and isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content") or message.get("refusal")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{secrets.token_hex(12)}",
                        "name": function.get("name") or "", "input": _tool_input(function.get("arguments"))})
    return {"id": _message_id(completion.get("id")), "type": "message", "role": "assistant",
            "model": completion.get("model") or "", "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason")), "stop_sequence": None,
            "usage": anthropic_usage(completion.get("usage"))}


def anthropic_answer(body: bytes, *, thinking: bool = False) -> dict[str, Any]:
    """The Anthropic message for the gateway's answer: Claude's own when it came whole, else translated.

    A native call's answer carries Anthropic's message beside its OpenAI view. The gateway cuts an
    answer that cost more than its hold (services/proxy.py) in the view only; a view with fewer text
    bytes than it was built with was cut, and then the cut view is what was paid for and is sent.
    """
    completion = orjson.loads(body)
    native = completion.get(MESSAGE_KEY)
    if isinstance(native, dict) and answer_text_bytes(body) == completion.get(TEXT_BYTES_KEY):
        return native
    return anthropic_message(completion, thinking=thinking)


# --- stream -------------------------------------------------------------------------------------


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return event_frame(kind, {"type": kind, **data})


class AnthropicEventStream:
    """Turns the gateway's OpenAI chunk frames into Anthropic stream events.

    message_start goes out with the first chunk and zero usage, since OpenAI reports usage only at the
    end; the closing message_delta then carries the full counts (input, output, cache read and write),
    which the anthropic SDK (2.x) copies over the message_start ones, so `get_final_message().usage` is
    complete. message_delta waits for both the finish chunk and the usage chunk; if [DONE] comes
    without usage (a provider that sent none), it goes out with zeros. An in-band error frame becomes an
    `error` event and ends the stream. With `thinking`, reasoning text streams as a thinking block.

    A frame carrying Anthropic's own event (a native call, providers/anthropic_native.py) sends that
    event as it is; the state kept from it lets a stream the gateway ends early (at the hold) still
    close its open block and end with message_delta and message_stop.
    """

    def __init__(self, model: str, *, thinking: bool = False) -> None:
        self.model = model
        self.thinking = thinking
        self.done = False  # message_stop or error sent: nothing more goes out
        self._buffer = b""
        self._started = False
        self._open: int | None = None  # index of the open content block
        self._open_kind: str | None = None
        self._blocks = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool_calls index -> content block index
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._delta_sent = False

    def feed(self, data: bytes) -> list[bytes]:
        """Events for some bytes of the gateway's stream (whole frames or parts of them)."""
        self._buffer += data
        events: list[bytes] = []
        while b"\n\n" in self._buffer and not self.done:
            frame, self._buffer = self._buffer.split(b"\n\n", 1)
            for line in frame.split(b"\n"):
                if line.startswith(b"data:"):
                    events.extend(self._payload(line[5:].strip()))
        return events

    def close(self) -> list[bytes]:
        """An error event when the gateway's stream ended without [DONE] or an error of its own."""
        if self.done:
            return []
        self.done = True
        return [self._error("the stream ended before the answer was complete")]

    def _error(self, message: str) -> bytes:
        return _event("error", {"error": {"type": "api_error", "message": message}})

    def _payload(self, payload: bytes) -> list[bytes]:
        if payload == b"[DONE]":
            return self._finish_message()
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(chunk, dict):
            return []
        if isinstance(chunk.get(EVENT_KEY), dict):
            return self._relay(chunk[EVENT_KEY])
        if chunk.get("error") is not None:
            self.done = True
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            return [self._error(message if isinstance(message, str) else "the provider failed")]
        events = self._start(chunk)
        choices = chunk.get("choices") or ()
        if choices and isinstance(choices[0], dict):
            events.extend(self._choice(choices[0]))
        if isinstance(chunk.get("usage"), dict):
            self._usage = anthropic_usage(chunk["usage"])
        events.extend(self._message_delta(ready=self._finish is not None and self._usage is not None))
        return events

    def _relay(self, event: dict[str, Any]) -> list[bytes]:
        """Anthropic's own event, sent as it is, after noting what it opens, closes or ends."""
        kind = event.get("type")
        if not isinstance(kind, str):
            return []
        if kind == "message_start":
            self._started = True
        elif kind == "content_block_start" and type(event.get("index")) is int:
            self._open, self._open_kind = event["index"], "native"
            self._blocks = max(self._blocks, event["index"] + 1)
        elif kind == "content_block_stop":
            self._open = self._open_kind = None
        elif kind == "message_delta":
            self._delta_sent = True
        elif kind == "message_stop":
            self.done = True
        return [_event(kind, event)]

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {"id": _message_id(chunk.get("id")), "type": "message", "role": "assistant",
                                   "model": chunk.get("model") or self.model, "content": [],
                                   "stop_reason": None, "stop_sequence": None,
                                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [_event("message_start", {"message": message})]

    def _choice(self, choice: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content")
        if self.thinking and isinstance(reasoning, str) and reasoning:
            if self._open_kind != "thinking":
                events.extend(self._open_block({"type": "thinking", "thinking": "", "signature": ""},
                                               "thinking"))
            events.append(_event("content_block_delta", {
                "index": self._open, "delta": {"type": "thinking_delta", "thinking": reasoning}}))
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._open_kind != "text":
                events.extend(self._open_block({"type": "text", "text": ""}, "text"))
            events.append(_event("content_block_delta", {
                "index": self._open, "delta": {"type": "text_delta", "text": text}}))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events.extend(self._tool_delta(call))
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
            events.extend(self._close_block())
        return events

    def _tool_delta(self, call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        if index not in self._tool_blocks:
            block: dict[str, Any] = {"type": "tool_use",
                                     "id": call.get("id") or f"toolu_{secrets.token_hex(12)}",
                                     "name": function.get("name") or "", "input": {}}
            events.extend(self._open_block(block, "tool_use"))
            self._tool_blocks[index] = self._blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # A fragment for an earlier call (OpenAI streams calls one after another, so this is rare)
            # still goes to that call's block: the SDK addresses blocks by index.
            events.append(_event("content_block_delta", {
                "index": self._tool_blocks[index],
                "delta": {"type": "input_json_delta", "partial_json": arguments}}))
        return events

    def _open_block(self, block: dict[str, Any], kind: str) -> list[bytes]:
        events = self._close_block()
        self._open, self._open_kind = self._blocks, kind
        self._blocks += 1
        events.append(_event("content_block_start", {"index": self._open, "content_block": block}))
        return events

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        index, self._open, self._open_kind = self._open, None, None
        return [_event("content_block_stop", {"index": index})]

    def _message_delta(self, *, ready: bool) -> list[bytes]:
        if self._delta_sent or not ready:
            return []
        self._delta_sent = True
        usage = self._usage or {"input_tokens": 0, "output_tokens": 0,
                                "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        return [_event("message_delta", {
            "delta": {"stop_reason": stop_reason(self._finish), "stop_sequence": None}, "usage": usage})]

    def _finish_message(self) -> list[bytes]:
        events = self._start({})
        events.extend(self._close_block())
        events.extend(self._message_delta(ready=True))
        events.append(_event("message_stop", {}))
        self.done = True
        return events

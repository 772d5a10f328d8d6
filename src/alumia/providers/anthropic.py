"""The Anthropic Messages wire format, as Anthropic documents it.

Requests are translated from OpenAI chat completions to `POST /messages`; answers, streamed or
not, are translated back into OpenAI's chat.completion shapes.

OpenAI fields with no field of the same name (docs/providers.md "The OpenAI door"):

* `response_format` json_schema: Anthropic's structured outputs, `output_config.format` ``{"type":
  "json_schema", "schema": ...}`` (generally available, no beta header): the answer is the JSON text.
* `response_format` json_object (or json_schema without a schema): structured outputs need a schema,
  so Claude is made to call a tool of the gateway's own (`JSON_TOOL`, input_schema ``{"type":
  "object"}``), and that call's input comes back as `message.content`, the JSON text, with
  finish_reason "stop" and no tool_calls; streamed, its input_json_delta fragments are content deltas.
* `reasoning_effort`: `thinking` with a budget (`EFFORT_BUDGETS`: Google's published effort budgets,
  minimal and low 1,024 (Claude's least), medium 8,192, high 24,576, xhigh 32,768, max all the limit
  allows), always below max_tokens as Anthropic requires (cut to max_tokens - 1); `none` is thinking
  disabled. Thinking is output within max_tokens, so the hold is unchanged.
* `stop` becomes `stop_sequences`; `parallel_tool_calls: false` becomes
  `tool_choice.disable_parallel_tool_use`.

`n`, `seed` and `logprobs` have no Anthropic counterpart; such requests never get here
(providers/features.py).
"""

import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from alumia.domain.usage import TokenUsage
from alumia.providers.base import ChatRequest, UpstreamError, UpstreamRequest, has_counts, retry_after
from alumia.providers.errors import error_message
from alumia.providers.openai_shape import error_frame, openai_usage
from alumia.sse import data_frame

ANTHROPIC_VERSION = "2023-06-01"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any"}
# The tool a json_object answer is asked through (the module's docstring).
JSON_TOOL = "json_answer"
MIN_THINKING_BUDGET = 1024
# reasoning_effort -> thinking budget_tokens (0: thinking disabled), cut to max_tokens - 1.
EFFORT_BUDGETS = {"none": 0, "minimal": MIN_THINKING_BUDGET, "low": MIN_THINKING_BUDGET, "medium": 8192,
                  "high": 24576, "xhigh": 32768, "max": sys.maxsize}


def json_tool_wanted(body: Mapping[str, Any]) -> bool:
    """Whether the request's response_format is answered through `JSON_TOOL`: JSON without a schema."""
    response_format = body.get("response_format")
    if not isinstance(response_format, Mapping):
        return False
    schema = (response_format.get("json_schema") or {}).get("schema")
    kind = response_format.get("type")
    return kind == "json_object" or (kind == "json_schema" and schema is None)


def thinking(effort: str, max_tokens: int) -> dict[str, Any]:
    """Anthropic's `thinking` for an OpenAI reasoning_effort (a key of EFFORT_BUDGETS) within max_tokens."""
    budget = EFFORT_BUDGETS[effort]
    if not budget:
        return {"type": "disabled"}
    return {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's finish_reason for an Anthropic stop_reason; unknown or missing values are `stop`."""
    return FINISH_REASONS.get(stop_reason or "", "stop")


# --- request ------------------------------------------------------------------------------------


def _image_block(url: str) -> dict[str, Any]:
    # Only base64 data URIs become inline data; anything else goes as a URL source, so a data URI
    # Anthropic cannot take is rejected upstream with a readable 400 rather than silently dropped.
    if url.startswith("data:") and "," in url:
        header, data = url[5:].split(",", 1)
        media_type, *params = header.split(";")
        if "base64" in params and media_type:
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Anthropic content blocks for an OpenAI message content (a string or a list of parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            block: dict[str, Any] = {"type": "text", "text": part["text"]}
            if isinstance(part.get("cache_control"), dict):
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url:
                blocks.append(_image_block(url))
    return blocks


def _tool_input(arguments: Any) -> dict[str, Any]:
    # Anthropic requires an object; a model can emit invalid JSON and the client echoes it back, and
    # failing the whole request over an old turn is worse than sending {} for that one call.
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _turn(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """The Anthropic role and blocks for one non-system OpenAI message; None for unknown roles."""
    role = message.get("role")
    if role == "user":
        return "user", _blocks(message.get("content"))
    if role == "assistant":
        blocks = _blocks(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            blocks.append({"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""),
                           "input": _tool_input(function.get("arguments"))})
        return "assistant", blocks
    if role == "tool":
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id", "")}
        content = message.get("content")
        if isinstance(content, str):
            if content:
                result["content"] = content
        elif blocks := _blocks(content):
            result["content"] = blocks
        return "user", [result]
    return None


def _messages(messages: list[dict[str, Any]]
              ) -> tuple[list[dict[str, Any]], str | list[dict[str, Any]] | None]:
    """Anthropic `messages` (alternating, merged) and top-level `system` for OpenAI messages."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") in ("system", "developer"):
            system.extend(_blocks(message.get("content")))
            continue
        turn = _turn(message)
        if turn is None or not turn[1]:
            continue  # Anthropic rejects empty content
        role, blocks = turn
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for merged in turns:
        # Anthropic wants a user turn's tool_result blocks before any other content.
        merged["content"].sort(key=lambda block: block["type"] != "tool_result")
        only = merged["content"][0]
        if len(merged["content"]) == 1 and only.keys() == {"type", "text"}:
            merged["content"] = only["text"]
    if not system:
        return turns, None
    if len(system) == 1 and system[0].keys() == {"type", "text"}:
        return turns, system[0]["text"]
    return turns, system


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Anthropic `tools` and `tool_choice`; the choice is only sent alongside tools."""
    tools = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if tool.get("type") == "function" else None
        if not isinstance(function, dict):
            continue
        converted = {"name": function.get("name", ""),
                     "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
        if function.get("description"):
            converted["description"] = function["description"]
        tools.append(converted)
    if not tools:
        return [], None
    choice = body.get("tool_choice")
    result: dict[str, Any] | None = None
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        result = {"type": _TOOL_CHOICES[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        result = {"type": "tool", "name": choice["function"].get("name", "")}
    if body.get("parallel_tool_calls") is False:
        result = result or {"type": "auto"}
        if result["type"] != "none":  # Anthropic's none choice has no such field
            result["disable_parallel_tool_use"] = True
    return tools, result


def request_body(request: ChatRequest, max_output_tokens: int) -> dict[str, Any]:
    """The Messages API body for a client's OpenAI chat request."""
    body = request.body
    messages, system = _messages(body.get("messages") or [])
    out: dict[str, Any] = {"model": request.model, "messages": messages, "max_tokens": max_output_tokens}
    if system is not None:
        out["system"] = system
    tools, tool_choice = _tools(body)
    if json_tool_wanted(body):
        # One object, by the gateway's own tool (the module's docstring); a request with tools of its
        # own is refused before it gets here (providers/features.py).
        tools = [{"name": JSON_TOOL, "description": "Answer with a JSON object.",
                  "input_schema": {"type": "object"}}]
        tool_choice = {"type": "tool", "name": JSON_TOOL, "disable_parallel_tool_use": True}
    if tools:
        out["tools"] = tools
    if tool_choice:
        out["tool_choice"] = tool_choice
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema" \
            and not json_tool_wanted(body):
        out["output_config"] = {"format": {"type": "json_schema",
                                           "schema": response_format["json_schema"]["schema"]}}
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in EFFORT_BUDGETS:
        out["thinking"] = thinking(effort, max_output_tokens)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    # Anthropic rejects whitespace-only stop sequences.
    if stops := [s for s in stops if isinstance(s, str) and s.strip()]:
        out["stop_sequences"] = stops
    if isinstance(body.get("temperature"), int | float):
        out["temperature"] = min(1.0, max(0.0, float(body["temperature"])))
    if isinstance(body.get("top_p"), int | float):
        out["top_p"] = body["top_p"]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if request.stream:
        out["stream"] = True
    return out


# --- response -----------------------------------------------------------------------------------


def _count(usage: Mapping[str, Any], name: str) -> int:
    return int(usage.get(name) or 0)


def _reasoning(usage: Mapping[str, Any]) -> int:
    details = usage.get("output_tokens_details")
    return _count(details, "thinking_tokens") if isinstance(details, Mapping) else 0


def _token_usage(usage: Mapping[str, Any]) -> TokenUsage:
    return TokenUsage(input_tokens=_count(usage, "input_tokens"),
                      output_tokens=_count(usage, "output_tokens"),
                      cache_read_tokens=_count(usage, "cache_read_input_tokens"),
                      cache_write_tokens=_count(usage, "cache_creation_input_tokens"),
                      reasoning_tokens=_reasoning(usage))


def _arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()


def completion(message: dict[str, Any], request: ChatRequest) -> tuple[dict[str, Any], TokenUsage | None]:
    """The OpenAI chat.completion for a parsed Messages response, and its usage.

    The usage is None, and the body has none, unless Anthropic reported both input_tokens and
    output_tokens.
    """
    blocks = message.get("content") or []
    json_mode = json_tool_wanted(request.body)
    texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
    thoughts = [b.get("thinking", "") for b in blocks if b.get("type") == "thinking"]
    uses = [b for b in blocks if b.get("type") == "tool_use"]
    if json_mode:
        # The gateway's own tool call is the answer: its input is the JSON the client asked for.
        texts += [_arguments(b.get("input")) for b in uses if b.get("name") == JSON_TOOL]
        uses = [b for b in uses if b.get("name") != JSON_TOOL]
    calls = [{"id": b.get("id", ""), "type": "function",
              "function": {"name": b.get("name", ""), "arguments": _arguments(b.get("input"))}}
             for b in uses]
    out_message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None,
                                   "refusal": None}
    if calls:
        out_message["tool_calls"] = calls
    if thoughts:
        out_message["reasoning_content"] = "".join(thoughts)
    reason = finish_reason(message.get("stop_reason"))
    if json_mode and reason == "tool_calls" and not calls:
        reason = "stop"
    raw_usage = message.get("usage")
    usage = _token_usage(raw_usage) if has_counts(raw_usage, "input_tokens", "output_tokens") else None
    body = {
        "id": f"chatcmpl-{message.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [{"index": 0, "message": out_message, "finish_reason": reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = openai_usage(usage)
    return body, usage


# --- stream -------------------------------------------------------------------------------------


class AnthropicStreamTranslator:
    """Turns Anthropic stream events into OpenAI chunk frames and keeps the usage.

    `usage` always holds the best counts known so far (input from message_start, cumulative output
    from the latest message_delta), so an interrupted stream can still be metered; the usage chunk
    is only sent to the client after a proper message_stop.
    """

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.usage: TokenUsage | None = None
        self.finished = False
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._counts: dict[str, int] = {}
        self._stop_reason: str | None = None
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._json_mode = json_tool_wanted(request.body)
        self._json_blocks: set[int] = set()  # blocks of the gateway's JSON_TOOL: their input is content
        self._usage_sent = False

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                       "model": self.request.model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}
        if self.request.include_usage:
            chunk["usage"] = None
        return data_frame(chunk)

    def _remember(self, usage: Any) -> None:
        # Counts are cumulative on every event that carries them: replace, never add.
        if not isinstance(usage, Mapping):
            return
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                     "cache_creation_input_tokens"):
            if usage.get(name) is not None:
                self._counts[name] = int(usage[name])
        if _reasoning(usage):
            self._counts["thinking_tokens"] = _reasoning(usage)
        self.usage = TokenUsage(
            input_tokens=self._counts.get("input_tokens", 0),
            output_tokens=self._counts.get("output_tokens", 0),
            cache_read_tokens=self._counts.get("cache_read_input_tokens", 0),
            cache_write_tokens=self._counts.get("cache_creation_input_tokens", 0),
            reasoning_tokens=self._counts.get("thinking_tokens", 0))

    def feed(self, payload: bytes) -> list[bytes]:
        """Frames for the client for one upstream `data:` payload."""
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            if message.get("id"):
                self._id = f"chatcmpl-{message['id']}"
            self._remember(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use" and self._json_mode and block.get("name") == JSON_TOOL:
                self._json_blocks.add(event.get("index", -1))
                return []
            if block.get("type") == "tool_use":
                index = self._tool_index[event.get("index", -1)] = len(self._tool_index)
                return [self._chunk({"tool_calls": [{
                    "index": index, "id": block.get("id", ""), "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""}}]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            return self._delta(event.get("index", -1), event.get("delta") or {})
        if kind == "message_delta":
            self._stop_reason = (event.get("delta") or {}).get("stop_reason") or self._stop_reason
            self._remember(event.get("usage"))
            return []
        if kind == "message_stop":
            self.finished = True
            reason = finish_reason(self._stop_reason)
            if reason == "tool_calls" and self._json_blocks and not self._tool_index:
                reason = "stop"  # only the gateway's JSON_TOOL was called: its input was the content
            return [self._chunk({}, reason)]
        if kind == "error":
            message, code = error_message(payload)
            return [error_frame(message, code, kind=code or "api_error")]
        return []  # ping, content_block_stop, and event types added later

    def _delta(self, block_index: int, delta: dict[str, Any]) -> list[bytes]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "input_json_delta" and delta.get("partial_json") and block_index in self._json_blocks:
            return [self._chunk({"content": delta["partial_json"]})]
        # input_json_delta also streams server-tool inputs; only client tool_use blocks are calls.
        if kind == "input_json_delta" and delta.get("partial_json") and block_index in self._tool_index:
            return [self._chunk({"tool_calls": [{"index": self._tool_index[block_index],
                                                 "function": {"arguments": delta["partial_json"]}}]})]
        return []  # signature_delta, citations_delta

    def close(self) -> list[bytes]:
        """The usage chunk, when the client asked for usage and the stream ended properly."""
        if not (self.request.include_usage and self.finished and self.usage) or self._usage_sent:
            return []
        self._usage_sent = True
        chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                 "model": self.request.model, "choices": [], "usage": openai_usage(self.usage)}
        return [data_frame(chunk)]


class AnthropicAdapter:
    """Translates OpenAI chat requests to Anthropic Messages and the answers back."""

    def build(self, base_url: str, request: ChatRequest, key: str, max_output_tokens: int) -> UpstreamRequest:
        """POST {base}/messages with x-api-key auth; max_tokens is the given limit."""
        return UpstreamRequest(
            url=f"{base_url}/messages",
            headers={"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION,
                     "content-type": "application/json"},
            body=orjson.dumps(request_body(request, max_output_tokens)),
        )

    def parse_response(self, body: bytes, request: ChatRequest) -> tuple[bytes, TokenUsage | None]:
        """The OpenAI chat.completion for a Messages response, and the usage Anthropic reported."""
        out, usage = completion(orjson.loads(body), request)
        return orjson.dumps(out), usage

    def stream_translator(self, request: ChatRequest) -> AnthropicStreamTranslator:
        """A translator for one streamed Messages response."""
        return AnthropicStreamTranslator(request)

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """The message and error type (e.g. overloaded_error) from Anthropic's error body."""
        message, code = error_message(body)
        return UpstreamError(provider=provider, status=status, message=message, code=code,
                             retry_after=retry_after(headers))

    def key_check(self, base_url: str, key: str) -> UpstreamRequest:
        """GET {base}/models."""
        return UpstreamRequest(url=f"{base_url}/models",
                               headers={"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION})

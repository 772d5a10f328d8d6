"""The Anthropic Messages wire format, as the simulator speaks it for provider `anthropic`.

Served under the provider's prefix (base URL ``http://HOST:PORT/anthropic/v1``): ``POST /messages`` and
``GET /models``. The key comes in ``x-api-key`` (or ``Authorization: Bearer``, which the official SDK
sends); a missing key or one containing "invalid" gets Anthropic's 401 `authentication_error`
(`alumia.sim.errors.BAD_KEY`). After the key, ``POST /messages`` requires the ``anthropic-version``
header, `model`, `max_tokens` (an integer >= 1) and a non-empty `messages` list, each failure a 400
`invalid_request_error` in Anthropic's envelope. ``GET /models`` (no version header needed) is one page,
``{data: [{type: "model", id, display_name, created_at, lifecycle: "active"}], has_more: false, first_id,
last_id}``.

Reply text and token rule: those of `alumia.sim.openai_format`, on the same functions.
    The text is ``"Simulated reply from anthropic/{model}:"`` and the words of the last user message.
    input_tokens  = sum over messages of (4 + words of the message's text: a string, or the `text` of
                    every ``{"type": "text"}`` block), plus, when `system` is present (not null), one
                    more message counted the same way from the system prompt (string or text blocks).
    output_tokens = reply words returned; `max_tokens` below the reply's length cuts it to that many
                    words with stop_reason "max_tokens", else stop_reason "end_turn".
    Cache counts are 0 unless the call asks for them.

Cache and thinking counts (``[[sim:cached=N;cache_write=K;reasoning=M]]``, `alumia.sim.faults`; as
Anthropic documents them). With P the input tokens of the rule above and C its output tokens:
    input_tokens                = P - N - K: Anthropic's input_tokens EXCLUDES cache reads and writes
    cache_read_input_tokens     = N
    cache_creation_input_tokens = K
    output_tokens               = C + M: thinking tokens are billed as output; Anthropic's usage has
                                  no separate thinking count, so M is visible only here
    The reply has no thinking block and its text does not change; `max_tokens` cuts the C words
    only. N + K above P is a 400 `invalid_request_error` (refused, not clamped). Every usage object
    has exactly these four keys.

Prompt caching (``cache_control`` on system blocks, content blocks or tools; stateless, so the same
request always gets the same counts): when a request marks anything and asks for no cache counts of
its own (below), cache_read_input_tokens = P // 2, cache_creation_input_tokens = P // 4 and
input_tokens the rest. `/_sim/calls` records the marks under ``received.cache_control``, by where they
stand (`alumia.sim.thinking.cache_marks`).

Thinking (``thinking``, recorded under ``received.thinking``; checked as Anthropic checks it: type
enabled with an integer budget_tokens from 1024 to max_tokens - 1, adaptive or disabled, else a 400):
enabled or adaptive makes the reply start with a thinking block of `alumia.sim.thinking`'s text, cut
to the budget (adaptive: to max_tokens - 1), signed with its signature. Its T words are output tokens
(output_tokens = C + M + T), and max_tokens bounds them with the reply: the reply's words are cut to
max_tokens - T. A thinking block sent back in an assistant turn must carry its text's signature, else
a 400 ``Invalid `signature` in `thinking` block``; `/_sim/calls` counts the ones received under
``received.thinking_blocks``. Streamed, the thinking block comes first (index 0):
content_block_start ``{"type": "thinking", "thinking": "", "signature": ""}``, one ``thinking_delta``
per word (spaced as the text deltas are), one ``signature_delta``, content_block_stop; the reply's
block follows at index 1.

Structured outputs (``output_config.format`` ``{"type": "json_schema", "schema": ...}``, or the beta's
``output_format``): the reply's text is `alumia.sim.tool_args.json_answer` of the schema, its words
the output tokens, cut by max_tokens like any reply. `/_sim/calls` records output_config,
output_format, tools, tool_choice, stop_sequences, temperature, and a seed or logprobs should one
ever be sent (Anthropic has neither).

Token count: ``POST /messages/count_tokens`` (key and version header as for messages; `model` and a
non-empty `messages`, no max_tokens) answers ``{"input_tokens": P}``, P by the rule above.

Tool use: with `tools` and `tool_choice` ``{"type": "any"}`` (the first tool) or ``{"type": "tool",
"name": ...}``, the reply is one ``tool_use`` block with `input` built from the tool's `input_schema`
(`alumia.sim.tool_args`), stop_reason "tool_use", output_tokens = words of the input's JSON, never cut
by `max_tokens`. ``auto``, ``none`` or no choice: the text reply.

Streaming (``"stream": true``), each event as ``event: <type>\\ndata: <json>\\n\\n``: message_start (the
message with empty content; its usage has input_tokens, both cache counts and output_tokens 1),
content_block_start, ping, one content_block_delta per reply word (``text_delta``; the first word bare,
later ones with a leading space) or, for a tool call, two ``input_json_delta`` fragments of the input's
JSON, content_block_stop, message_delta (stop_reason, stop_sequence null, usage
``{"output_tokens": C + M}``, cumulative), message_stop.

Faults (`alumia.sim.faults`): read from and removed from the last user message; a status fault answers
in Anthropic's error shape; `no_usage` drops `usage` from the message, message_start and message_delta;
`partial_usage` (not streaming) leaves the message's usage with input_tokens only.
`hold` waits for ``POST /_sim/release`` after the checks and the delay. `overrun=N` adds the words
``more1 ... moreN`` and ignores `max_tokens`: stop_reason "end_turn", output_tokens = every word sent
(plus thinking). `stream_error_after=N` (streaming only) sends message_start, content_block_start,
ping, the first N content_block_delta events, then ``event: error`` with
``{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`` and nothing else.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from alumia.sim.calls import CallLog, received_fields
from alumia.sim.errors import ANTHROPIC_STREAM_ERROR, ErrorReply, anthropic_error, error_response, fault_reply
from alumia.sim.faults import (
    NO_FAULTS,
    FaultError,
    Faults,
    check_cache_bounds,
    may_have_faults,
    stream_response,
    wait_out,
)
from alumia.sim.held import HeldCalls
from alumia.sim.openai_format import Reply, key_problem, make_reply, prompt_tokens, take_faults
from alumia.sim.thinking import cache_marks, signature, thinking_words
from alumia.sim.tool_args import ToolCall, forced_call, json_answer

WIRE_FORMAT = "anthropic"
# OpenAI-style finish reasons of `Reply` -> Anthropic stop reasons.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
# The request fields `/_sim/calls` records as received (`alumia.sim.calls.received_fields`).
RECEIVED_FIELDS = ("max_tokens", "max_completion_tokens", "n", "thinking", "top_k", "output_config",
                   "output_format", "tools", "tool_choice", "stop_sequences", "temperature", "seed",
                   "logprobs")
# A fixed release time for listed models keeps /models byte-for-byte stable.
MODELS_CREATED_AT = "2026-01-01T00:00:00Z"
ROLES = frozenset({"user", "assistant"})

_JSON = "application/json"


def display_name(model_id: str) -> str:
    """A human name for a model id: ``claude-haiku-4-5`` -> ``Claude Haiku 4.5``."""
    words: list[str] = []
    for part in model_id.split("-"):
        if part.isdigit() and words and words[-1][-1:].isdigit():
            words[-1] += "." + part
        else:
            words.append(part.capitalize() if not part.isdigit() else part)
    return " ".join(words)


def models_body(model_ids: Sequence[str]) -> bytes:
    """Anthropic's `GET /models` list: one page holding every model."""
    return orjson.dumps({
        "data": [{"type": "model", "id": model_id, "display_name": display_name(model_id),
                  "created_at": MODELS_CREATED_AT, "lifecycle": "active"} for model_id in model_ids],
        "has_more": False,
        "first_id": model_ids[0] if model_ids else None,
        "last_id": model_ids[-1] if model_ids else None,
    })


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """The parts of a Messages request the simulator acts on."""

    model: str
    messages: list[dict[str, Any]]
    system: object
    max_tokens: int
    stream: bool
    tool_call: ToolCall | None = None
    thinking: bool = False  # enabled or adaptive
    thinking_budget: int | None = None  # the most thinking words: the budget, or max_tokens - 1
    cache_marked: bool = False
    json_text: str | None = None  # the answer to output_config.format (structured outputs)

    def counted_messages(self) -> list[dict[str, Any]]:
        """The messages the token rule counts: the system prompt, when present, first."""
        if self.system is None:
            return self.messages
        return [{"role": "system", "content": self.system}, *self.messages]


def _invalid(message: str) -> ErrorReply:
    return anthropic_error(400, message)


def _forced_tool_call(body: dict[str, Any]) -> ToolCall | ErrorReply | None:
    """The call a forcing `tool_choice` asks for; None when the choice does not force one."""
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") not in ("any", "tool"):
        return None
    named = choice.get("name") if choice.get("type") == "tool" else None
    if choice.get("type") == "tool" and (not isinstance(named, str) or not named):
        return _invalid("tool_choice.tool.name: Field required")
    tools = body.get("tools")
    usable = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
              ] if isinstance(tools, list) else []
    if not usable:
        return _invalid("tool_choice: tool_choice may only be specified while providing tools")
    # `any` picks the first client tool (one with an input_schema), else the first tool at all.
    tool = (next((t for t in usable if t["name"] == named), None) if named
            else next((t for t in usable if "input_schema" in t), usable[0]))
    if tool is None:
        return _invalid(f"tool_choice: tool '{named}' was not found in tools")
    return forced_call(tool["name"], tool.get("input_schema"))


def _thinking(body: dict[str, Any], max_tokens: int | None) -> tuple[bool, int | None] | ErrorReply:
    """Whether the request asks for thinking and its budget in words; an ErrorReply for a bad setting."""
    thinking = body.get("thinking")
    if thinking is None:
        return False, None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return False, None
    if kind == "adaptive":
        if "budget_tokens" in thinking:
            return _invalid("thinking.adaptive.budget_tokens: Extra inputs are not permitted")
        return True, max_tokens - 1 if max_tokens is not None else None
    if kind != "enabled":
        return _invalid("thinking: Input tag does not match any of the expected tags: 'enabled', "
                        "'disabled', 'adaptive'")
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        return _invalid("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if max_tokens is not None and budget >= max_tokens:
        return _invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
    return True, budget


def _json_text(body: dict[str, Any]) -> str | ErrorReply | None:
    """The JSON answer structured outputs ask for (`output_config.format`, or the beta's `output_format`)."""
    config = body.get("output_config")
    spec = config.get("format") if isinstance(config, dict) else body.get("output_format")
    if spec is None:
        return None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or spec.get("type") != "json_schema" or not isinstance(schema, dict):
        return _invalid("output_config.format: Input should be {type: json_schema, schema: {...}}")
    return json_answer(schema)


def _bad_signature(messages: list[Any]) -> ErrorReply | None:
    """A 400 for a thinking block sent back whose signature is not its text's."""
    for i, message in enumerate(messages):
        content = message.get("content") if message.get("role") == "assistant" else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if isinstance(block, dict) and block.get("type") == "thinking" \
                    and block.get("signature") != signature(str(block.get("thinking"))):
                return _invalid(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
    return None


def thinking_blocks(body: dict[str, Any]) -> int:
    """How many thinking blocks a request sends back in its assistant turns."""
    count = 0
    for message in body.get("messages") or ():
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, list):
            count += sum(isinstance(block, dict) and block.get("type") == "thinking" for block in content)
    return count


def parse_messages_request(body: object, *, counting: bool = False) -> MessagesRequest | ErrorReply:
    """Check a decoded request body the way Anthropic does for the fields we use; an ErrorReply when bad.

    `counting` checks a token-count request, which has no max_tokens.
    """
    if not isinstance(body, dict):
        return _invalid("The request body is not valid JSON.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _invalid("model: Field required")
    max_tokens = None if counting else body.get("max_tokens")
    if max_tokens is None and not counting:
        return _invalid("max_tokens: Field required")
    if not counting and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        return _invalid("max_tokens: Input should be an integer greater than or equal to 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _invalid("messages: Field required" if messages is None
                        else "messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            return _invalid(f"messages.{i}.content: Field required")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return _invalid("system: Input should be a valid string or a list of text blocks")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _invalid("stream: Input should be a valid boolean")
    tool_call = _forced_tool_call(body)
    if isinstance(tool_call, ErrorReply):
        return tool_call
    thinking = _thinking(body, max_tokens)
    if isinstance(thinking, ErrorReply):
        return thinking
    if (bad := _bad_signature(messages)) is not None:
        return bad
    json_text = _json_text(body)
    if isinstance(json_text, ErrorReply):
        return json_text
    return MessagesRequest(model=model, messages=messages, system=system, max_tokens=max_tokens or 0,
                           stream=bool(stream), tool_call=tool_call, thinking=thinking[0],
                           thinking_budget=thinking[1], cache_marked=bool(cache_marks(body)),
                           json_text=json_text)


def usage_of(reply: Reply, output_tokens: int | None = None) -> dict[str, int]:
    """The `usage` object; `output_tokens` overrides the reply's own (message_start reports 1).

    input_tokens excludes the cached and cache-written tokens; output_tokens includes the thinking ones.
    """
    return {
        "input_tokens": reply.prompt_tokens - reply.cached - reply.cache_write,
        "output_tokens": reply.output_tokens if output_tokens is None else output_tokens,
        "cache_creation_input_tokens": reply.cache_write,
        "cache_read_input_tokens": reply.cached,
    }


def _tool_use_id(message_id: str) -> str:
    # One tool call per reply, so its id can be derived from the message's.
    return "toolu_" + message_id.removeprefix("msg_")


def _thinking_block(thinking: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature(thinking)}


def message_body(req: MessagesRequest, reply: Reply, message_id: str, *, usage: bool = True,
                 partial_usage: bool = False, thinking: str | None = None) -> bytes:
    """The non-streaming Message; `partial_usage` reports input_tokens only; `thinking` comes first."""
    call = reply.tool_call
    block: dict[str, Any] = (
        {"type": "text", "text": reply.content} if call is None
        else {"type": "tool_use", "id": _tool_use_id(message_id), "name": call.name, "input": call.arguments})
    content = [_thinking_block(thinking), block] if thinking is not None else [block]
    body: dict[str, Any] = {
        "id": message_id, "type": "message", "role": "assistant", "model": req.model, "content": content,
        "stop_reason": STOP_REASONS[reply.finish_reason], "stop_sequence": None,
    }
    if usage:
        full = usage_of(reply)
        body["usage"] = {"input_tokens": full["input_tokens"]} if partial_usage else full
    return orjson.dumps(body)


def _event(payload: dict[str, Any]) -> bytes:
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _thinking_events(thinking: str) -> list[bytes]:
    """The thinking block's events, at index 0."""
    words = thinking.split()
    return [
        _event({"type": "content_block_start", "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        *(_event({"type": "content_block_delta", "index": 0,
                  "delta": {"type": "thinking_delta", "thinking": word if i == 0 else " " + word}})
          for i, word in enumerate(words)),
        _event({"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": signature(thinking)}}),
        _event({"type": "content_block_stop", "index": 0}),
    ]


def stream_events(req: MessagesRequest, reply: Reply, message_id: str, *, usage: bool = True,
                  error_after: int | None = None, thinking: str | None = None) -> list[bytes]:
    """Every SSE event of the streamed reply, message_stop included, in order.

    With `error_after` N (`stream_error_after`): the opening events, the first N deltas, then
    Anthropic's ``event: error`` (overloaded), and nothing after it.
    """
    start: dict[str, Any] = {"id": message_id, "type": "message", "role": "assistant", "model": req.model,
                             "content": [], "stop_reason": None, "stop_sequence": None}
    if usage:
        start["usage"] = usage_of(reply, output_tokens=1)
    call = reply.tool_call
    if call is None:
        block: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": word if i == 0 else " " + word}
                  for i, word in enumerate(reply.words)]
    else:
        block = {"type": "tool_use", "id": _tool_use_id(message_id), "name": call.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": part} for part in call.fragments(2)]
    index = 0 if thinking is None else 1
    opening = [
        _event({"type": "message_start", "message": start}),
        *(_thinking_events(thinking) if thinking is not None else ()),
        _event({"type": "content_block_start", "index": index, "content_block": block}),
        _event({"type": "ping"}),
    ]
    content = [_event({"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas]
    if error_after is not None:
        return [*opening, *content[:error_after], _event(dict(ANTHROPIC_STREAM_ERROR))]
    end: dict[str, Any] = {"type": "message_delta",
                           "delta": {"stop_reason": STOP_REASONS[reply.finish_reason], "stop_sequence": None}}
    if usage:
        end["usage"] = {"output_tokens": reply.output_tokens}
    return [
        *opening,
        *content,
        _event({"type": "content_block_stop", "index": index}),
        _event(end),
        _event({"type": "message_stop"}),
    ]


def key_of(request: Request) -> str | None:
    """The key a request carries: the `x-api-key` header, else a bearer token.

    Anthropic documents `x-api-key`; its official Python SDK (2.x) sends the key as
    ``Authorization: Bearer``, so both are taken.
    """
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def routes(provider: str, prefix: str, model_ids: Sequence[str], log: CallLog,
           held: HeldCalls) -> list[Route]:
    """The messages and models routes of one Anthropic-format provider under its path prefix.

    `held` is the simulator's one registry of calls held by ``[[sim:hold]]``.
    """
    models_payload = models_body(model_ids)
    messages_path = f"{prefix}/messages"
    count_path = f"{prefix}/messages/count_tokens"
    models_path = f"{prefix}/models"

    def received(raw: bytes, fields: dict[str, Any]) -> dict[str, Any]:
        out = received_fields(raw, fields, RECEIVED_FIELDS)
        if marks := cache_marks(fields):
            out["cache_control"] = marks
        if blocks := thinking_blocks(fields):
            out["thinking_blocks"] = blocks
        return out

    async def messages(request: Request) -> Response:
        raw = await request.body()
        key = key_of(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        fields = body if isinstance(body, dict) else {}
        model = fields.get("model")
        log.record(provider=provider, model=model if isinstance(model, str) else None, key=key,
                   stream=fields.get("stream") is True, path=messages_path, received=received(raw, fields))
        # Authentication comes before validation, as on the real API.
        if (problem := key_problem(provider, WIRE_FORMAT, key, log)) is not None:
            return error_response(problem)
        if not request.headers.get("anthropic-version"):
            return error_response(_invalid("anthropic-version: header is required"))
        req = parse_messages_request(body)
        if isinstance(req, ErrorReply):
            return error_response(req)
        faults: Faults = NO_FAULTS
        if may_have_faults(raw):
            try:
                faults, cleaned = take_faults(req.messages)
                req = replace(req, messages=cleaned)
                if faults.cached or faults.cache_write:
                    check_cache_bounds(faults, prompt_tokens(req.counted_messages()), provider=provider,
                                       cache_writes=True)
            except FaultError as exc:
                return error_response(_invalid(f"messages: {exc}"))
            await wait_out(faults, held, f"{provider}/{req.model}")
            if faults.status is not None:
                return error_response(fault_reply(WIRE_FORMAT, faults.status))
        counted = req.counted_messages()
        if req.cache_marked and not (faults.cached or faults.cache_write):
            prompt = prompt_tokens(counted)
            faults = replace(faults, cached=prompt // 2, cache_write=prompt // 4)
        thought = (thinking_words(provider, req.model, req.messages, req.thinking_budget)
                   if req.thinking else [])
        reply = make_reply(provider, req.model, counted, req.max_tokens - len(thought), req.tool_call, faults,
                           json_text=req.json_text)
        reply = replace(reply, reasoning=reply.reasoning + len(thought))
        thinking = " ".join(thought) if req.thinking else None
        message_id = "msg_" + os.urandom(12).hex()
        if req.stream:
            return stream_response(stream_events(req, reply, message_id, usage=not faults.no_usage,
                                                 error_after=faults.stream_error_after, thinking=thinking),
                                   faults)
        return Response(message_body(req, reply, message_id, usage=not faults.no_usage,
                                     partial_usage=faults.partial_usage, thinking=thinking), media_type=_JSON)

    async def count_tokens(request: Request) -> Response:
        raw = await request.body()
        key = key_of(request)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        fields = body if isinstance(body, dict) else {}
        model = fields.get("model")
        log.record(provider=provider, model=model if isinstance(model, str) else None, key=key,
                   stream=False, path=count_path, received=received(raw, fields))
        if (problem := key_problem(provider, WIRE_FORMAT, key, log)) is not None:
            return error_response(problem)
        if not request.headers.get("anthropic-version"):
            return error_response(_invalid("anthropic-version: header is required"))
        req = parse_messages_request(body, counting=True)
        if isinstance(req, ErrorReply):
            return error_response(req)
        return Response(orjson.dumps({"input_tokens": prompt_tokens(req.counted_messages())}),
                        media_type=_JSON)

    async def models(request: Request) -> Response:
        key = key_of(request)
        log.record(provider=provider, model=None, key=key, stream=False, path=models_path)
        if (problem := key_problem(provider, WIRE_FORMAT, key, log)) is not None:
            return error_response(problem)
        return Response(models_payload, media_type=_JSON)

    return [Route(messages_path, messages, methods=["POST"]),
            Route(count_path, count_tokens, methods=["POST"]),
            Route(models_path, models, methods=["GET"])]

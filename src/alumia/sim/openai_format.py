"""The OpenAI chat-completions wire format, as the simulator speaks it for the 12 providers that use it.

Replies are deterministic: the same request always gets the same text and token counts, so tests can
assert exact usage and money without a model.

Reply text
    ``"Simulated reply from {provider}/{model}:"`` followed by the words of the last user message,
    at most `MAX_ECHO_WORDS` of them. Words are whitespace-separated; they are joined with single
    spaces (see `reply_words`).

Token rule (what `usage` reports)
    prompt_tokens     = sum over messages of (4 + number of whitespace-separated words in the
                        message's text), where the text is the string content, or the `text` of every
                        ``{"type": "text"}`` part when the content is a list; other parts, `null`
                        content and tool calls add nothing beyond the 4 (see `prompt_tokens`).
    completion_tokens = number of reply words actually returned, over every choice. When the
                        request sets the provider's limit field below the full reply's length, each
                        choice is cut to that many words and its finish_reason is "length"; otherwise
                        "stop". The limit field is the provider's (catalog `limit_field`):
                        `max_completion_tokens`, or else the legacy `max_tokens`, for the providers
                        that read max_completion_tokens; `max_tokens` alone for the others (DeepSeek
                        and the like ignore a max_completion_tokens entirely).
    total_tokens      = prompt_tokens + completion_tokens.

n (several choices)
    A provider whose catalog entry `supports_n` answers `n` (an integer 1-128, default 1) with n
    choices, index 0..n-1. Choice k >= 1 names itself in its prefix, ``{provider}/{model}#{k+1}:``,
    so each has its own text of the same length; every choice is cut by the limit on its own and
    the usage counts the prompt once and the output of every choice (reasoning M per choice). A forced
    tool call is made once per choice (ids ``call_<id>``, ``call_<id>_2``...). Streamed, the choices
    come one after the other (role chunk, then content chunks, each with its `index`), then one finish
    chunk per choice in order; groq's and moonshot's usage ride on the last finish chunk. A provider
    without `supports_n` answers n > 1 with a 400 (param "n", code "invalid_value"), as Groq does; a
    bad n is a 400 everywhere.
    Cached, cache-written and reasoning tokens are 0 unless the call asks for them (below).

Cache and reasoning counts, per provider (docs/providers.md)
    ``[[sim:cached=N;cache_write=K;reasoning=M]]`` in the last user message (`alumia.sim.faults`) says
    that N of the prompt tokens were read from the cache, K written to it, and that the model spent
    M reasoning tokens besides its reply. P is the prompt_tokens of the rule above (N and K are part
    of it, never added to it), C the completion tokens of the rule above (the reply's words, or the
    tool call's). The reply itself does not change: reasoning is counted, never shown, and no
    provider gets a `reasoning_content`. The output limit cuts the reply's C words only; M is not
    counted against it. N + K above P is a 400 (not clamped); K is a 400 for every provider but
    openai (the only one here whose usage has a cache-write field). The exact `usage` objects:

    standard: openai, mistral, zhipu, xiaomi, nvidia, qwen, minimax, groq, cerebras
        ``{"prompt_tokens": P, "completion_tokens": C+M, "total_tokens": P+C+M,
        "prompt_tokens_details": {"cached_tokens": N}, "completion_tokens_details":
        {"reasoning_tokens": M}}``; openai's prompt_tokens_details also has ``"cache_write_tokens": K``
        (always, 0 by default). Cached tokens are inside prompt_tokens, reasoning tokens inside
        completion_tokens.
    deepseek
        standard, plus ``"prompt_cache_hit_tokens": N, "prompt_cache_miss_tokens": P-N`` (hit + miss
        = prompt_tokens). prompt_tokens_details.cached_tokens is kept as well, as current DeepSeek
        responses carry both.
    moonshot
        ``{"prompt_tokens": P, "completion_tokens": C+M, "total_tokens": P+C+M, "cached_tokens": N}``:
        the cache count top-level and no *_details objects, so M is visible only inside
        completion_tokens.
    xai
        standard except ``"completion_tokens": C``: xAI leaves reasoning out of completion_tokens, so
        total_tokens = P+C+M is more than prompt + completion when M > 0.
    cerebras
        standard, plus a top-level ``"time_info": {"queue_time", "prompt_time", "completion_time",
        "total_time", "created"}`` (seconds; deterministic: 0.0001, P/100000, (C+M)/2000, their sum,
        and the `created` of the response) beside the usage, on the body and on the usage chunk;
        dropped with the usage under `no_usage`.
    groq
        standard; see streaming for ``x_groq``.

Streaming sends a role chunk, one chunk per reply word (the first word bare, each later one with its
leading space, so the fragments concatenate to exactly the non-streaming content), a finish chunk and,
with ``stream_options.include_usage``, a usage chunk with empty `choices`; then ``data: [DONE]``.
Each chunk has ``"usage": null`` only when include_usage was asked, as on OpenAI. Per provider:

    deepseek  a ``: keep-alive`` SSE comment line (a frame of its own) before the first chunk, on
              every stream, as DeepSeek sends while a request is queued. It is not an event:
              ``cut_after`` does not count it.
    moonshot  the usage is ``choices[0].usage`` of the finish chunk, always (with or without
              include_usage); there is never a usage chunk and never a top-level `usage` key.
    groq      the role chunk carries ``"x_groq": {"id": "req_..."}`` and the finish chunk
              ``"x_groq": {"id", "usage": <standard usage>}``, always; with include_usage the
              standard usage chunk follows as well.
    cerebras  the usage chunk (include_usage) carries `time_info` beside `usage`.

Tool calls
    When the request has function `tools` and forces a call (`tool_choice` "required", or
    ``{"type": "function", "function": {"name": ...}}``), the reply is one call of the named tool, else
    of the first, with arguments built from its `parameters` schema (`alumia.sim.tool_args`):
    `message.tool_calls` ``[{id: "call_...", type: "function", function: {name, arguments}}]``,
    `content` null, finish_reason "tool_calls". completion_tokens = the words of the arguments JSON;
    the output limit does not cut a tool call. Streamed: the role chunk carries the call's id and name
    with empty arguments, two chunks carry the arguments in two fragments, then the finish chunk.
    `tool_choice` "auto", "none" or absent gets the ordinary text reply.

Faults
    ``[[sim:...]]`` directives in the last user message (`alumia.sim.faults`) are read and removed
    before the reply is made. A status fault answers in OpenAI's error shape
    (`alumia.sim.errors.fault_reply`), with two provider exceptions:
    minimax  HTTP **200**, as MiniMax does, with a body of no `choices` whose ``base_resp`` holds the
             business status (1002 for 429, 1004 for 401, 1008 for 402, 1001 for 504, 1024 for any
             other; `alumia.sim.errors.minimax_fault_body`): the JSON body when not streaming, the same
             object as a single ``data:`` event when streaming, after which the stream ends without
             ``[DONE]``.
    zhipu    the HTTP status, with zhipu's business code in ``{"error": {"code", "message"}}`` (429
             "1302", 402 "1113", 404 "1211", any other "1234").
    `partial_usage` (not streaming) reports ``{"prompt_tokens", "total_tokens"}`` only.
    `no_usage` drops `usage` from the response and every usage from the stream (the usage chunk, the
    ``usage: null`` keys, moonshot's choice usage, groq's x_groq usage, cerebras' time_info), even with
    ``include_usage``. `cached`, `cache_write` and `reasoning` set the counts above.
    `hold` waits for ``POST /_sim/release`` after the checks and the delay (`alumia.sim.held`).
    `overrun=N` adds the words ``more1 ... moreN`` to the full reply and ignores the output limit:
    finish_reason "stop", completion_tokens = every word sent (plus reasoning, as always).
    `stream_error_after=N` (streaming only) sends the role chunk (after deepseek's keep-alive), the
    first N content chunks, then the provider's error event and nothing else: ``data:
    {"error": {"message", "type": "server_error", "code": "server_error"}}``, zhipu's
    ``{"error": {"code": "1234", "message"}}``, or minimax's ``base_resp`` chunk (1024)
    (`alumia.sim.errors.openai_stream_error_body`); no finish chunk, no usage chunk, no ``[DONE]``.
"""

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from alumia.sim.calls import CallLog, received_fields
from alumia.sim.errors import (
    ErrorReply,
    bad_key_reply,
    error_response,
    fault_reply,
    minimax_fault_body,
    openai_error,
    openai_stream_error_body,
)
from alumia.sim.faults import (
    MARKER,
    NO_FAULTS,
    FaultError,
    Faults,
    check_cache_bounds,
    may_have_faults,
    parse_faults,
    stream_response,
    strip_directives,
    wait_out,
)
from alumia.sim.held import HeldCalls
from alumia.sim.tool_args import ToolCall, forced_call

REPLY_PREFIX = "Simulated reply from"
# `[[sim:overrun=N]]` adds the words more1 ... moreN to the reply.
OVERRUN_WORD = "more"
MAX_ECHO_WORDS = 64
PER_MESSAGE_TOKENS = 4
SYSTEM_FINGERPRINT = "fp_alumia_sim"
# A fixed creation time for listed models keeps /models byte-for-byte stable.
MODELS_CREATED = 1767225600
# Providers that also take the key in an `api-key` header.
API_KEY_HEADER_PROVIDERS = frozenset({"xiaomi"})

# Providers whose OpenAI-format usage reports cache writes (prompt_tokens_details.cache_write_tokens).
CACHE_WRITE_PROVIDERS = frozenset({"openai"})
KEEP_ALIVE = b": keep-alive\n\n"
# Cerebras time_info: a fixed queue time, in seconds.
QUEUE_TIME = 0.0001

_JSON = "application/json"
_DONE = b"data: [DONE]\n\n"
FINISH_TOOL_CALLS = "tool_calls"
# OpenAI's bound on `n`.
MAX_N = 128
# The request fields `/_sim/calls` records as received (`alumia.sim.calls.received_fields`).
RECEIVED_FIELDS = ("max_tokens", "max_completion_tokens", "n", "reasoning_effort", "response_format")


def text_of(content: object) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """Prompt tokens by the module's rule: 4 per message plus the words of its text."""
    return sum(PER_MESSAGE_TOKENS + len(text_of(m.get("content")).split()) for m in messages)


def reply_words(provider: str, model: str, messages: Sequence[dict[str, Any]], choice: int = 0) -> list[str]:
    """The full (uncut) reply, as words: the prefix naming provider and model, then the echoed prompt.

    Choice `choice` (0-based) of an `n` > 1 request names itself in the prefix's last word,
    ``{provider}/{model}#{choice + 1}:``, from the second choice on: same length, its own text.
    """
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    echoed = text_of(last_user.get("content")).split()[:MAX_ECHO_WORDS] if last_user else []
    mark = f"#{choice + 1}" if choice else ""
    # Splitting the prefix too keeps "words" and "what .split() finds in the content" the same thing
    # even for a model id with spaces in it.
    return f"{REPLY_PREFIX} {provider}/{model}{mark}:".split() + echoed


def _strip_part(part: object) -> object:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return {**part, "text": strip_directives(part["text"])}
    return part


def take_faults(messages: Sequence[dict[str, Any]]) -> tuple[Faults, list[dict[str, Any]]]:
    """The faults asked for in the last user message, and the messages with the directives removed.

    Works on OpenAI messages and on Anthropic ones alike: both carry a string or a list of
    ``{"type": "text"}`` parts. Raises `FaultError` for a directive the simulator does not know.
    """
    index = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    if index is None:
        return NO_FAULTS, list(messages)
    content = messages[index].get("content")
    text = text_of(content)
    if MARKER not in text:
        return NO_FAULTS, list(messages)
    faults = parse_faults(text)
    if isinstance(content, str):
        cleaned: object = strip_directives(content)
    else:  # a list of parts, since text_of found text in it
        cleaned = [_strip_part(part) for part in content] if isinstance(content, list) else content
    out = list(messages)
    out[index] = {**messages[index], "content": cleaned}
    return faults, out


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply as returned: its words (already cut to the limit), finish reason and prompt tokens.

    With `tool_call` set the reply is that call instead of text: `words` is empty and finish_reason
    is "tool_calls". `cached` and `cache_write` are parts of `prompt_tokens`; `reasoning` comes on top
    of `completion_tokens` (the module's "Cache and reasoning counts").
    """

    words: list[str]
    finish_reason: str
    prompt_tokens: int
    tool_call: ToolCall | None = None
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def content(self) -> str:
        """The reply text, as the non-streaming response carries it."""
        return " ".join(self.words)

    @property
    def completion_tokens(self) -> int:
        """Output tokens: the reply's words, or the words of a tool call's arguments JSON."""
        return self.tool_call.tokens if self.tool_call is not None else len(self.words)

    @property
    def output_tokens(self) -> int:
        """Every token the model produced: the reply's own plus the reasoning tokens."""
        return self.completion_tokens + self.reasoning

    def usage(self, provider: str = "openai") -> dict[str, Any]:
        """The `usage` object in `provider`'s OpenAI-format shape (the module's token rule)."""
        return usage_of([self], provider)

    def time_info(self, created: int) -> dict[str, float]:
        """Cerebras' `time_info`: deterministic timings, in seconds, made from the token counts."""
        return time_info_of([self], created)


def usage_of(replies: Sequence[Reply], provider: str = "openai", *, partial: bool = False) -> dict[str, Any]:
    """The `usage` of a reply's choices in `provider`'s shape: one prompt, every choice's output.

    `partial` (``[[sim:partial_usage]]``) leaves the output count out: prompt and total only.
    """
    first = replies[0]
    prompt = first.prompt_tokens
    completion = sum(r.completion_tokens for r in replies)
    reasoning = sum(r.reasoning for r in replies)
    output = completion + reasoning
    if partial:
        return {"prompt_tokens": prompt, "total_tokens": prompt + output}
    if provider == "moonshot":
        return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
                "cached_tokens": first.cached}
    prompt_details: dict[str, int] = {"cached_tokens": first.cached}
    if provider in CACHE_WRITE_PROVIDERS:
        prompt_details["cache_write_tokens"] = first.cache_write
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        # xAI leaves reasoning out of completion_tokens (but not out of total_tokens).
        "completion_tokens": completion if provider == "xai" else output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    if provider == "deepseek":
        usage["prompt_cache_hit_tokens"] = first.cached
        usage["prompt_cache_miss_tokens"] = prompt - first.cached
    return usage


def time_info_of(replies: Sequence[Reply], created: int) -> dict[str, float]:
    """Cerebras' `time_info` for a reply's choices: deterministic timings made from the token counts."""
    prompt_time = round(replies[0].prompt_tokens / 100_000, 6)
    completion_time = round(sum(r.output_tokens for r in replies) / 2_000, 6)
    return {"queue_time": QUEUE_TIME, "prompt_time": prompt_time, "completion_time": completion_time,
            "total_time": round(QUEUE_TIME + prompt_time + completion_time, 6),
            "created": float(created)}


def make_reply(provider: str, model: str, messages: Sequence[dict[str, Any]], limit: int | None,
               tool_call: ToolCall | None = None, faults: Faults = NO_FAULTS, choice: int = 0) -> Reply:
    """The reply to a request, cut to `limit` words when it is longer ("length"), else whole ("stop").

    With `tool_call` the reply is that call ("tool_calls"), never cut. The `cached`, `cache_write`
    and `reasoning` counts of `faults` are carried into the reply's usage; they never change its words.
    `faults.overrun` (a provider ignoring the limit) adds that many words and is never cut ("stop").
    `choice` is the 0-based index of the choice among the request's `n` (`reply_words`).
    """
    if tool_call is not None:
        return Reply(words=[], finish_reason=FINISH_TOOL_CALLS, prompt_tokens=prompt_tokens(messages),
                     tool_call=tool_call, cached=faults.cached, cache_write=faults.cache_write,
                     reasoning=faults.reasoning)
    words = reply_words(provider, model, messages, choice)
    finish = "stop"
    if faults.overrun:
        words += [f"{OVERRUN_WORD}{n}" for n in range(1, faults.overrun + 1)]
    elif limit is not None and len(words) > limit:
        words, finish = words[:limit], "length"
    return Reply(words=words, finish_reason=finish, prompt_tokens=prompt_tokens(messages),
                 cached=faults.cached, cache_write=faults.cache_write, reasoning=faults.reasoning)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat-completions request the simulator acts on."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    limit: int | None
    tool_call: ToolCall | None = None
    choices: int = 1  # `n`


def _forced_tool_call(body: dict[str, Any]) -> ToolCall | ErrorReply | None:
    """The call a forcing `tool_choice` asks for; None when the choice does not force one."""
    choice = body.get("tool_choice")
    named: str | None = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        named = function.get("name") if isinstance(function, dict) else None
        if not isinstance(named, str) or not named:
            return openai_error(400, "Missing required parameter: 'tool_choice.function.name'.",
                                param="tool_choice.function.name", code="missing_required_parameter")
    elif choice != "required":
        return None
    tools = body.get("tools")
    functions = [t["function"] for t in tools if isinstance(t, dict) and t.get("type") == "function"
                 and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
                 ] if isinstance(tools, list) else []
    if not functions:
        return openai_error(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                                 "'tools' are specified.", param="tool_choice", code="invalid_value")
    function = next((f for f in functions if f["name"] == named), None) if named else functions[0]
    if function is None:
        return openai_error(400, f"Invalid value for 'tool_choice': function '{named}' is not among "
                                 "'tools'.", param="tool_choice", code="invalid_value")
    return forced_call(function["name"], function.get("parameters"))


def _limit_name(body: dict[str, Any], limit_field: str) -> str:
    """The field the limit is read from: the provider's own; max_tokens, the legacy name, as well where
    the provider reads max_completion_tokens (as OpenAI does), the latter winning when both are set."""
    if limit_field == "max_completion_tokens" and body.get("max_completion_tokens") is None:
        return "max_tokens"
    return limit_field


def parse_chat_request(body: object, *, limit_field: str = "max_completion_tokens",
                       supports_n: bool = True) -> ChatRequest | ErrorReply:
    """Check a decoded request body the way OpenAI does for the fields we use; an ErrorReply when bad.

    `limit_field` is the field the provider reads the output limit from (`_limit_name`); a provider
    without `supports_n` refuses n > 1 with a 400, as Groq does.
    """
    if not isinstance(body, dict):
        return openai_error(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return openai_error(400, "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return openai_error(400, "Missing required parameter: 'messages'.", param="messages",
                            code="missing_required_parameter")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return openai_error(400, f"Invalid value for 'messages[{i}]': expected an object with a 'role'.",
                                param=f"messages[{i}]", code="invalid_value")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return openai_error(400, "Invalid type for 'stream': expected a boolean.", param="stream",
                            code="invalid_type")
    options = body.get("stream_options")
    if options is not None and not stream:
        return openai_error(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                            param="stream_options", code="invalid_value")
    if options is not None and not isinstance(options, dict):
        return openai_error(400, "Invalid type for 'stream_options': expected an object.",
                            param="stream_options", code="invalid_type")
    name = _limit_name(body, limit_field)
    limit = body.get(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        return openai_error(400, f"Invalid '{name}': expected an integer >= 1, but got {limit!r} instead.",
                            param=name, code="integer_below_min_value")
    n = body.get("n")
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        return openai_error(400, f"Invalid 'n': expected an integer between 1 and {MAX_N}, but got {n!r} "
                                 "instead.", param="n", code="invalid_value")
    if n > 1 and not supports_n:
        return openai_error(400, "'n' > 1 is not supported by this provider.", param="n",
                            code="invalid_value")
    tool_call = _forced_tool_call(body)
    if isinstance(tool_call, ErrorReply):
        return tool_call
    return ChatRequest(model=model, messages=messages, stream=bool(stream),
                       include_usage=bool(options and options.get("include_usage") is True), limit=limit,
                       tool_call=tool_call, choices=n)


def _call_id(completion_id: str, choice: int = 0) -> str:
    # One call per choice, so its id can be derived from the completion's and the choice's index.
    return "call_" + completion_id.removeprefix("chatcmpl-") + (f"_{choice + 1}" if choice else "")


def _message(reply: Reply, completion_id: str, choice: int) -> dict[str, Any]:
    call = reply.tool_call
    if call is None:
        return {"role": "assistant", "content": reply.content, "refusal": None}
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [{
        "id": _call_id(completion_id, choice), "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json},
    }]}


def completion_body(req: ChatRequest, replies: Sequence[Reply], completion_id: str, created: int,
                    *, usage: bool = True, provider: str = "openai", partial_usage: bool = False) -> bytes:
    """The non-streaming `chat.completion` body, one choice per reply (`n`), usage in `provider`'s shape.

    No usage when `usage` is False (`no_usage`); `partial_usage` leaves its output count out.
    """
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{
            "index": index,
            "message": _message(reply, completion_id, index),
            "finish_reason": reply.finish_reason,
            "logprobs": None,
        } for index, reply in enumerate(replies)],
    }
    if usage:
        body["usage"] = usage_of(replies, provider, partial=partial_usage)
        if provider == "cerebras":
            body["time_info"] = time_info_of(replies, created)
    return orjson.dumps(body)


def stream_frames(req: ChatRequest, replies: Sequence[Reply], completion_id: str, created: int,
                  *, provider: str = "openai", usage: bool = True,
                  error_after: int | None = None) -> list[bytes]:
    """Every SSE frame of the streamed reply, `[DONE]` included, in order, as `provider` streams it.

    Each reply is one choice (`n`): its role chunk and content chunks carry its `index`, choice after
    choice, then each choice's finish chunk in order. `usage` False (`no_usage`) leaves out every
    usage, wherever the provider puts it; the standard usage chunk also needs `req.include_usage`.
    With `error_after` N (`stream_error_after`) the stream is the first role chunk, the N chunks after
    it (later choices' role chunks count among them) and the provider's mid-stream error event.
    """
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": req.model,
            "system_fingerprint": SYSTEM_FINGERPRINT}
    # Moonshot reports usage only inside choices[0]; the others add the standard usage chunk when asked.
    usage_chunk = req.include_usage and usage and provider != "moonshot"
    # OpenAI puts `usage: null` on every chunk only when usage was asked for.
    tail: dict[str, Any] = {"usage": None} if usage_chunk else {}
    groq_id = "req_" + completion_id.removeprefix("chatcmpl-")

    def frame(index: int, delta: dict[str, Any], finish_reason: str | None,
              extra: dict[str, Any] | None = None, choice_extra: dict[str, Any] | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None,
                  **(choice_extra or {})}
        return b"data: " + orjson.dumps({**head, "choices": [choice], **tail, **(extra or {})}) + b"\n\n"

    frames: list[bytes] = []
    for index, reply in enumerate(replies):
        first_extra = {"x_groq": {"id": groq_id}} if provider == "groq" and index == 0 else None
        call = reply.tool_call
        if call is None:
            frames.append(frame(index, {"role": "assistant", "content": ""}, None, first_extra))
            frames.extend(frame(index, {"content": word if i == 0 else " " + word}, None)
                          for i, word in enumerate(reply.words))
        else:
            frames.append(frame(index, {"role": "assistant", "content": None, "tool_calls": [{
                "index": 0, "id": _call_id(completion_id, index), "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]}, None, first_extra))
            frames.extend(frame(index, {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]},
                                None) for fragment in call.fragments(2))
    if error_after is not None:
        # The role chunk, N content chunks, then the error: no finish, no usage, no [DONE].
        error = openai_stream_error_body(provider, req.model, completion_id, created)
        frames = [*frames[:1 + error_after], b"data: " + orjson.dumps(error) + b"\n\n"]
        return [KEEP_ALIVE, *frames] if provider == "deepseek" else frames
    finish_extra: dict[str, Any] | None = None
    choice_extra: dict[str, Any] | None = None
    if usage and provider == "groq":
        finish_extra = {"x_groq": {"id": groq_id, "usage": usage_of(replies, provider)}}
    elif usage and provider == "moonshot":
        choice_extra = {"usage": usage_of(replies, provider)}
    for index, reply in enumerate(replies):
        final = index == len(replies) - 1  # groq's and moonshot's usage ride on the last finish chunk
        frames.append(frame(index, {}, reply.finish_reason, finish_extra if final else None,
                            choice_extra if final else None))
    if usage_chunk:
        last: dict[str, Any] = {**head, "choices": [], "usage": usage_of(replies, provider)}
        if provider == "cerebras":
            last["time_info"] = time_info_of(replies, created)
        frames.append(b"data: " + orjson.dumps(last) + b"\n\n")
    frames.append(_DONE)
    if provider == "deepseek":
        frames.insert(0, KEEP_ALIVE)
    return frames


def minimax_fault(req: ChatRequest, status: int, faults: Faults) -> Response:
    """MiniMax's answer to a status fault: HTTP 200 with its `base_resp`, a JSON body or one SSE event."""
    # MiniMax's ids are bare hex.
    body = orjson.dumps(minimax_fault_body(status, req.model, os.urandom(16).hex(), int(time.time())))
    if req.stream:
        # No [DONE]: the stream just ends after the error event.
        return stream_response([b"data: " + body + b"\n\n"], faults)
    return Response(body, media_type=_JSON)


def models_body(provider: str, model_ids: Sequence[str]) -> bytes:
    """The `GET /models` list for one provider."""
    return orjson.dumps({"object": "list", "data": [
        {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": provider}
        for model_id in model_ids
    ]})


def key_of(request: Request, provider: str) -> str | None:
    """The key a request carries the way `provider` accepts it, or None when it carries none."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            return token
    if provider in API_KEY_HEADER_PROVIDERS:
        return request.headers.get("api-key") or None
    return None


def key_problem(provider: str, wire_format: str, key: str | None, log: CallLog) -> ErrorReply | None:
    """What the provider says about a key, or None when it works.

    Rejected (the provider's own bad-key answer): no key, a key containing "invalid", or a key revoked
    through `POST /_sim/revoke` (a key that passed the gateway's check when added and was revoked at
    the provider later). Restricted (HTTP 403 in the provider's shape): a key containing "restricted".
    """
    if key is None or "invalid" in key or log.is_revoked(key):
        return bad_key_reply(provider, key)
    if "restricted" in key:
        return fault_reply(wire_format, 403)
    return None



def routes(provider: str, prefix: str, model_ids: Sequence[str], log: CallLog, held: HeldCalls, *,
           limit_field: str = "max_completion_tokens", supports_n: bool = True) -> list[Route]:
    """The chat-completions and models routes of one provider under its path prefix.

    `held` is the simulator's one registry of calls held by ``[[sim:hold]]``. `limit_field` and
    `supports_n` are the provider's, from the catalog (`parse_chat_request`).
    """
    models_payload = models_body(provider, model_ids)
    chat_path = f"{prefix}/chat/completions"
    models_path = f"{prefix}/models"

    async def chat(request: Request) -> Response:
        raw = await request.body()
        key = key_of(request, provider)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        fields = body if isinstance(body, dict) else {}
        model = fields.get("model")
        log.record(provider=provider, model=model if isinstance(model, str) else None, key=key,
                   stream=fields.get("stream") is True, path=chat_path,
                   received=received_fields(raw, fields, RECEIVED_FIELDS))
        # Authentication comes before validation, as on the real APIs.
        if (problem := key_problem(provider, "openai", key, log)) is not None:
            return error_response(problem)
        req = parse_chat_request(body, limit_field=limit_field, supports_n=supports_n)
        if isinstance(req, ErrorReply):
            return error_response(req)
        faults = NO_FAULTS
        if may_have_faults(raw):
            try:
                faults, messages = take_faults(req.messages)
                if faults.cached or faults.cache_write:
                    check_cache_bounds(faults, prompt_tokens(messages), provider=provider,
                                       cache_writes=provider in CACHE_WRITE_PROVIDERS)
            except FaultError as exc:
                return error_response(openai_error(400, str(exc), param="messages", code="invalid_value"))
            req = replace(req, messages=messages)
            await wait_out(faults, held, f"{provider}/{req.model}")
            if faults.status is not None:
                if provider == "minimax":
                    return minimax_fault(req, faults.status, faults)
                return error_response(fault_reply("openai", faults.status, provider))
        replies = [make_reply(provider, req.model, req.messages, req.limit, req.tool_call, faults, choice)
                   for choice in range(req.choices)]
        completion_id = "chatcmpl-" + os.urandom(12).hex()
        created = int(time.time())
        usage = not faults.no_usage
        if req.stream:
            return stream_response(stream_frames(req, replies, completion_id, created, provider=provider,
                                                 usage=usage, error_after=faults.stream_error_after),
                                   faults)
        return Response(completion_body(req, replies, completion_id, created, usage=usage, provider=provider,
                                        partial_usage=faults.partial_usage),
                        media_type=_JSON)

    async def models(request: Request) -> Response:
        key = key_of(request, provider)
        log.record(provider=provider, model=None, key=key, stream=False, path=models_path)
        if (problem := key_problem(provider, "openai", key, log)) is not None:
            return error_response(problem)
        return Response(models_payload, media_type=_JSON)

    return [Route(chat_path, chat, methods=["POST"]), Route(models_path, models, methods=["GET"])]

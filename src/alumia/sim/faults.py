"""Scripted faults: a caller asks the simulator to misbehave from inside the prompt.

The gateway forwards request bodies but not custom headers, so a fault is chosen per call by a
directive in the text of the LAST user message of the request:

    ``[[sim:status=429]]``                  answer with that HTTP status (400-599), in the provider's own
                                            error shape (see `alumia.sim.errors.fault_reply`)
    ``[[sim:delay_ms=200]]``                wait that long (0-60000 ms) before answering at all
    ``[[sim:cut_after=3]]``                 streaming: send that many SSE events (never the stream's
                                            last one; ``:`` comment lines are not events), then drop
                                            the connection without ending the body; ignored when not
                                            streaming (see `stream_response`)
    ``[[sim:no_usage]]``                    leave usage (``usage`` / ``usageMetadata``) out everywhere
    ``[[sim:partial_usage]]``               not streaming: report usage without its output count
                                            (OpenAI format ``{"prompt_tokens", "total_tokens"}``,
                                            Anthropic ``{"input_tokens"}``, Gemini
                                            ``{"promptTokenCount", "totalTokenCount"}``); ignored
                                            when streaming; `no_usage` wins over it
    ``[[sim:cached=N]]``                    N (>= 0) of the prompt tokens were read from the provider's
                                            cache; reported in the provider's own field
    ``[[sim:cache_write=K]]``               K (>= 0) of the prompt tokens were written to the cache;
                                            only for providers that report cache writes (anthropic
                                            ``cache_creation_input_tokens``, openai
                                            ``prompt_tokens_details.cache_write_tokens``), a 400 for any
                                            other provider
    ``[[sim:reasoning=M]]``                 the model also spent M (>= 0) reasoning/thinking tokens;
                                            counted in usage only, the reply text does not change
    ``[[sim:hold]]``                        once the call is recorded and checked (and any delay is
                                            over), wait until a test calls ``POST /_sim/release``, then
                                            answer as usual; ``GET /_sim/held`` counts the calls
                                            waiting. Never released, it answers as usual after
                                            `alumia.sim.held.HOLD_TIMEOUT_SECONDS` (60 s) and logs a
                                            warning. Streaming or not, every format
    ``[[sim:overrun=N]]``                   the provider ignores the output limit (1 <= N <=
                                            `MAX_OVERRUN`): the reply is the full reply (prefix and
                                            echo) followed by the N words ``more1 more2 ... moreN``,
                                            never cut by max_tokens / max_completion_tokens /
                                            maxOutputTokens, finish_reason "stop" (``end_turn``,
                                            ``STOP``), and usage counts every word sent. Streamed, the
                                            extra words stream like the others. A forced tool call is
                                            not changed
    ``[[sim:stream_error_after=N]]``        streaming: after N (>= 0) content events the provider
                                            sends its own in-stream error and ends the body cleanly,
                                            with no finish, no final usage and no end marker; ignored
                                            when not streaming (see "Mid-stream errors" below)

Usage directives, per provider (the exact shapes are in the format modules' docstrings,
`alumia.sim.openai_format` above all). P is the prompt tokens of the
token rule (cached and cache-written tokens are part of P), C the reply's own output tokens:

    ==================================  ==============================================================
    openai, mistral, zhipu, xiaomi,     prompt_tokens P, prompt_tokens_details.cached_tokens N
    nvidia, qwen, minimax, groq,        (openai also .cache_write_tokens K), completion_tokens C+M,
    cerebras (standard)                 completion_tokens_details.reasoning_tokens M, total P+C+M
    deepseek                            standard, plus prompt_cache_hit_tokens N and
                                        prompt_cache_miss_tokens P-N
    moonshot                            prompt_tokens P, completion_tokens C+M, top-level
                                        cached_tokens N, no *_details objects; total P+C+M
    xai                                 standard, except completion_tokens C (reasoning excluded);
                                        total P+C+M
    groq / cerebras                     standard; groq adds ``x_groq.usage`` when streaming,
                                        cerebras a ``time_info`` object beside the usage
    anthropic                           input_tokens P-N-K, cache_read_input_tokens N,
                                        cache_creation_input_tokens K, output_tokens C+M
    gemini                              promptTokenCount P, cachedContentTokenCount N (only when
                                        N > 0), candidatesTokenCount C, thoughtsTokenCount M (only
                                        when M > 0), totalTokenCount P+C+M
    ==================================  ==============================================================

A cache larger than the prompt is refused, not clamped: N + K above P is a 400 in the provider's
request-error shape (P is only known once the directive is removed, so this check is the format
module's, `check_cache_bounds`). `no_usage` wins over the usage directives.

Provider-specific status faults: ``status=N`` for ``minimax`` is not an HTTP error but an HTTP 200
whose body carries MiniMax's ``base_resp`` business status (1002 for 429, 1004 for 401, 1008 for 402,
1001 for 504, 1024 for any other) and no choices; for ``zhipu`` it is the HTTP status with zhipu's
business code in ``error.code`` (429 "1302", 402 "1113", 404 "1211", any other "1234"). See
`alumia.sim.errors.fault_reply`.

Mid-stream errors (``stream_error_after=N``). The stream starts as usual: its opening events are
sent, then the first N content events (all of them when N is larger), then the error; nothing after
it. A content event is one that carries reply content: OpenAI format, a chunk with one reply word (or
one of a tool call's two argument fragments), after the role chunk (and DeepSeek's ``: keep-alive``);
Anthropic, a ``content_block_delta``, after message_start (which carries the input usage as usual),
content_block_start and ping; Gemini, a chunk of the reply (`alumia.sim.gemini_format.CHUNK_WORDS`
words, or the function call), every one with its usageMetadata as usual but none with a finishReason.
The error, exactly:

    ==================  ==========================================================================
    anthropic           ``event: error\\ndata: {"type":"error","error":{"type":"overloaded_error",
                        "message":"Overloaded"}}\\n\\n`` (Anthropic's documented event); no
                        content_block_stop, message_delta or message_stop
    OpenAI format       ``data: {"error":{"message":"Simulated fault: the server had an error while
                        streaming the response.","type":"server_error","code":"server_error"}}\\n\\n``
                        (§7: ``data: {"error":{...}}``); no finish chunk, usage chunk or ``[DONE]``
    zhipu               the same frame with z.ai's own envelope and its generic business code:
                        ``data: {"error":{"code":"1234","message":"Network error, please contact
                        customer service"}}\\n\\n`` (§4)
    minimax             MiniMax's ``base_resp`` error chunk (§4: it can come inside an HTTP 200),
                        the one its status faults send: ``data: {"id",...,"base_resp":
                        {"status_code":1024,"status_msg":"internal error"}}\\n\\n``
                        (`alumia.sim.errors.minimax_fault_body`; like every MiniMax error chunk it
                        carries MiniMax's empty ``usage: {"total_tokens":0,"total_characters":0}``)
    gemini              Google's RPC error as a raw JSON object, pretty-printed over several lines
                        with no ``data:`` prefix, as Gemini sends it mid-stream (§7):
                        ``{"error":{"code":503,"message":"The model is overloaded. Please try again
                        later.","status":"UNAVAILABLE"}}`` indented by two spaces, then ``\\n``; in
                        the JSON-array form (no ``alt=sse``) it is the array's last element, then
                        ``]``
    ==================  ==========================================================================

`stream_error_after` and `cut_after` together are refused (a `FaultError`): a stream ends one way.

Several go in one directive separated by ``;`` (``[[sim:delay_ms=50;status=503]]``); several
directives in the message are merged left to right, a later value replacing an earlier one. An unknown
name or a bad value is a `FaultError`, answered with a 400 in the provider's request-error shape, so a
typo in a test fails loudly instead of silently doing nothing.

The directive is removed from the message before anything else reads it: it is replaced by a single
space, so it is not echoed in the reply and its words are not counted as prompt tokens (text on either
side of it stays separate words). Only the last user message is read; a directive anywhere else (an
earlier turn, a system prompt) is ordinary text, counted like any other.

Order of checks on every format: the key first (a bad key always gets the bad-key answer), then the
request's own validation, then the faults: the delay, then the hold, then the status.
"""

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from alumia.sim.held import HeldCalls

MARKER = "[[sim:"
MARKER_BYTES = MARKER.encode()
MAX_DELAY_MS = 60_000
# Enough to overrun any reservation a test makes, small enough to stream quickly.
MAX_OVERRUN = 100_000
MAX_TOKEN_COUNT = 10_000_000
_DIRECTIVE = re.compile(r"\[\[sim:([^\]]*)\]\]")


class FaultError(ValueError):
    """A `[[sim:...]]` directive the simulator does not understand."""


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults one call asked for; the default instance asks for none."""

    status: int | None = None
    delay_ms: int = 0
    cut_after: int | None = None
    no_usage: bool = False
    partial_usage: bool = False
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0
    hold: bool = False
    overrun: int = 0
    stream_error_after: int | None = None


NO_FAULTS = Faults()


def _int_value(name: str, value: str, low: int, high: int | None) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise FaultError(f"[[sim:{name}=...]] needs an integer, got {value!r}") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise FaultError(f"[[sim:{name}=...]] must be {bound}, got {number}")
    return number


def parse_faults(text: str) -> Faults:
    """The faults asked for by every `[[sim:...]]` directive in `text`; `NO_FAULTS` when there is none.

    Raises `FaultError` for an unknown name or a bad value.
    """
    status: int | None = None
    delay_ms = 0
    cut_after: int | None = None
    no_usage = False
    partial_usage = False
    hold = False
    overrun = 0
    stream_error_after: int | None = None
    counts = {"cached": 0, "cache_write": 0, "reasoning": 0}
    for match in _DIRECTIVE.finditer(text):
        for item in match.group(1).split(";"):
            name, has_value, value = (part.strip() for part in item.partition("="))
            if not name:
                continue
            if name == "no_usage" and not has_value:
                no_usage = True
            elif name == "partial_usage" and not has_value:
                partial_usage = True
            elif name == "hold" and not has_value:
                hold = True
            elif name == "overrun" and has_value:
                overrun = _int_value(name, value, 1, MAX_OVERRUN)
            elif name == "stream_error_after" and has_value:
                stream_error_after = _int_value(name, value, 0, None)
            elif name == "status" and has_value:
                status = _int_value(name, value, 400, 599)
            elif name == "delay_ms" and has_value:
                delay_ms = _int_value(name, value, 0, MAX_DELAY_MS)
            elif name == "cut_after" and has_value:
                cut_after = _int_value(name, value, 0, None)
            elif name in counts and has_value:
                counts[name] = _int_value(name, value, 0, MAX_TOKEN_COUNT)
            else:
                raise FaultError(f"unknown simulator directive {item.strip()!r}; known: status=N, "
                                 "delay_ms=N, cut_after=N, no_usage, partial_usage, cached=N, "
                                 "cache_write=N, reasoning=N, hold, overrun=N, stream_error_after=N")
    if cut_after is not None and stream_error_after is not None:
        raise FaultError("[[sim:cut_after=...]] and [[sim:stream_error_after=...]] cannot be combined: "
                         "a stream ends one way")
    return Faults(status=status, delay_ms=delay_ms, cut_after=cut_after, no_usage=no_usage,
                  partial_usage=partial_usage, hold=hold,
                  overrun=overrun, stream_error_after=stream_error_after, **counts)


def check_cache_bounds(faults: Faults, prompt_tokens: int, *, provider: str,
                       cache_writes: bool) -> None:
    """Raise `FaultError` when the cache directives do not fit the call.

    `cache_write` is refused for a provider whose usage has no cache-write field (`cache_writes`
    False), and cached plus cache-written tokens may not exceed the prompt: refused rather than
    clamped, so a test that miscounts its prompt fails loudly.
    """
    if faults.cache_write and not cache_writes:
        raise FaultError(f"[[sim:cache_write=...]] is not reported by provider {provider!r}; only "
                         "anthropic and openai report cache writes")
    if faults.cached + faults.cache_write > prompt_tokens:
        asked = " plus ".join(f"{name}={count}" for name, count in (
            ("cached", faults.cached), ("cache_write", faults.cache_write)) if count)
        raise FaultError(f"[[sim:{asked}]] must not exceed the prompt's {prompt_tokens} tokens")


def strip_directives(text: str) -> str:
    """`text` with every `[[sim:...]]` directive replaced by one space."""
    return _DIRECTIVE.sub(" ", text)


def may_have_faults(raw_body: bytes) -> bool:
    """A cheap pre-check on the raw request body: False means no directive can be in it.

    Lets a call without faults (every benchmark call) skip the message rewriting entirely.
    """
    return MARKER_BYTES in raw_body


async def delay(faults: Faults) -> None:
    """Wait out the requested delay, if any."""
    if faults.delay_ms:
        await asyncio.sleep(faults.delay_ms / 1000)


async def wait_out(faults: Faults, held: HeldCalls, what: str) -> None:
    """Wait out the requested delay, then the hold (until `POST /_sim/release`), if asked for.

    `what` names the call in the warning logged when a hold times out.
    """
    await delay(faults)
    if faults.hold:
        await held.hold(what)


class CutStreamResponse(Response):
    """A streamed response that sends some frames, then drops the connection without ending the body.

    It sends the headers and the frames as chunks of a chunked body, then returns without the final
    empty `http.response.body` message. The ASGI server closes the connection (uvicorn logs one line,
    "ASGI callable returned without completing response."), and the client sees a body cut short,
    which is what a proxy timeout or a crashed upstream looks like.
    """

    def __init__(self, frames: Sequence[bytes], media_type: str) -> None:
        # Set up as StreamingResponse does, without `Response.__init__`: that would give the empty
        # body a `content-length: 0`, and the frames would then break the HTTP framing instead of the
        # stream.
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self._frames = list(frames)
        self.init_headers({"cache-control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers and the frames, and leave the response incomplete."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        for frame in self._frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})


async def _each(frames: Sequence[bytes]) -> AsyncIterator[bytes]:
    # An async generator, not a list, so each frame goes out as its own chunk, as a real stream does
    # (and Starlette does not hand a sync iterator to a thread pool).
    for chunk in frames:
        yield chunk


def cut_frames(frames: Sequence[bytes], events: int) -> list[bytes]:
    """The frames a stream cut after `events` events sends: never the last frame.

    A frame starting with ``:`` is an SSE comment, not an event: it is sent when it comes before the
    cut, but not counted.
    """
    out: list[bytes] = []
    seen = 0
    for frame in frames[:-1]:
        if not frame.startswith(b":"):
            if seen == events:
                break
            seen += 1
        out.append(frame)
    return out


def stream_response(frames: Sequence[bytes], faults: Faults,
                    media_type: str = "text/event-stream") -> Response:
    """The streamed answer made of `frames`, cut short when the faults ask for it.

    With `cut_after=N` at most N frames are sent, and never the last one (the stream's proper end:
    ``[DONE]``, ``message_stop``, Gemini's chunk with the finish reason), so a cut stream is always
    recognisably incomplete even when N is larger than the stream. SSE comment frames (DeepSeek's
    ``: keep-alive``) are not events and are not counted (`cut_frames`).
    """
    if faults.cut_after is not None:
        return CutStreamResponse(cut_frames(frames, faults.cut_after), media_type)
    return StreamingResponse(_each(frames), media_type=media_type, headers={"cache-control": "no-cache"})

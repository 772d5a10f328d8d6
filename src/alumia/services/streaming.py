"""Relaying one streamed answer: SSE framing in, OpenAI chunks out, the hold as a ceiling, metering.

A platform-routed stream is held to its reservation: before each frame goes out the gateway works out
what everything delivered so far, this frame included, would bill (the provider's running counts
where it reports them, else a count of the delivered text that is rarely above the real one,
domain/estimate.py). A frame that would take that bill past the hold is not sent: the stream ends
there with `finish_reason: "length"`, the usage chunk when the client asked for it, and `[DONE]`, and
the call is billed for what was delivered, never more than the hold (docs/behaviour.md "Money").

Every frame goes out through the call's KeyRedactor (redact.py), which knows the key in use. Nothing
that goes wrong while relaying (a frame no translator foresaw, an answer carrying part of the key)
ends a call unmetered: the stream ends with an in-band error and the delivered text is billed.
"""

import functools
import logging
import time
import traceback
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from alumia.domain.estimate import FEWEST_BYTES_PER_TOKEN, estimate_input, estimate_usage
from alumia.domain.usage import TokenUsage
from alumia.providers.base import Adapter, ChatRequest
from alumia.providers.openai_shape import DONE_FRAME, error_frame, openai_usage
from alumia.redact import KeyInAnswer, KeyRedactor
from alumia.services.call import Call
from alumia.sse import data_frame

log = logging.getLogger("alumia.gateway")

# The status of a call whose stream the gateway ended at its reservation.
RESERVATION_REACHED = "reservation_reached"
# The status of a call whose stream the gateway could not relay on (unreadable, or carrying the key).
UPSTREAM_ERROR = "upstream_error"


async def sse_payloads(lines: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The payloads of an SSE stream: each `data:` line, and a bare JSON object that may span lines.

    Blank separators, `event:` lines and comments (DeepSeek's `: keep-alive`) carry nothing we need.
    Gemini can send an error after the stream started as raw JSON without `data:`; it is gathered
    until it parses and handed on like a data payload.
    """
    pending = b""
    async for line in lines:
        if line.startswith(b"data:"):
            yield line[5:].strip()
        elif pending or line.lstrip().startswith((b"{", b"[")):
            pending += line
            try:
                orjson.loads(pending)
            except orjson.JSONDecodeError:
                if len(pending) > 1_000_000:
                    pending = b""  # not JSON after all; do not buffer without bound
                continue
            yield pending.strip()
            pending = b""


def chunk_of(frame: bytes) -> dict[str, Any] | None:
    """The chat.completion.chunk object of one `data: {...}` frame; None for anything else."""
    try:
        chunk = orjson.loads(frame[6:])
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _text_bytes(part: object) -> int:
    # A provider may send a part that is not a string (a list, a number): the client still gets it.
    if part is None:
        return 0
    return len(part.encode()) if isinstance(part, str) else len(orjson.dumps(part))


def chunk_text_bytes(chunk: dict[str, Any]) -> int:
    """UTF-8 bytes of the text a chunk delivers: content, reasoning and tool-call arguments.

    Any shape is read without raising: what is not where text belongs is not counted, and a part
    that is not a string counts as its JSON.
    """
    size = 0
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        size += _text_bytes(delta.get("content")) + _text_bytes(delta.get("reasoning_content"))
        tool_calls = delta.get("tool_calls")
        for tool_call in tool_calls if isinstance(tool_calls, list) else ():
            function = tool_call.get("function") if isinstance(tool_call, dict) else None
            if isinstance(function, dict):
                size += _text_bytes(function.get("arguments"))
    return size


class _Ceiling:
    """Whether a platform stream's bill for what it delivered still fits its hold."""

    def __init__(self, call: Call[ChatRequest], input_tokens: int) -> None:
        self.call, self.input_tokens = call, input_tokens
        self.limit = call.request.max_output_tokens or call.model.max_output_tokens
        self.request_bytes = len(call.request.raw)

    def fits(self, delivered_bytes: int, reported: TokenUsage | None) -> bool:
        """Whether delivering this much text, with the provider's counts so far, bills within the hold."""
        # Counted low (FEWEST_BYTES_PER_TOKEN) so that an honest answer is never cut short.
        usage = estimate_usage(delivered_bytes, reported, input_tokens=self.input_tokens,
                               bytes_per_token=FEWEST_BYTES_PER_TOKEN)
        # The hold was sized for request-bytes input tokens and `limit` output tokens at the dearest
        # prices, so usage within both fits without pricing it; that keeps pricing off nearly every frame.
        if usage.output_tokens <= self.limit and usage.prompt_tokens <= self.request_bytes:
            return True
        return self.call.tariff.fits(usage, self.call.hold)


def _finish_frames(last: dict[str, Any] | None, usage: TokenUsage, include_usage: bool,
                   request_id: str) -> list[bytes]:
    """The end of a stream the gateway stopped: a "length" finish chunk, the usage chunk if asked, [DONE]."""
    identity: dict[str, Any] = {
        "id": (last or {}).get("id") or f"chatcmpl-{request_id}", "object": "chat.completion.chunk",
        "created": (last or {}).get("created") or int(time.time()), "model": (last or {}).get("model"),
    }
    frames = [data_frame({**identity, "choices": [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]})]
    if include_usage:
        frames.append(data_frame({**identity, "choices": [], "usage": openai_usage(usage)}))
    frames.append(DONE_FRAME)
    return frames


def _where(exc: Exception) -> str:
    """Where an exception was raised (file:line in function): enough to find it, nothing of the data."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"


async def relay_stream(call: Call[ChatRequest], adapter: Adapter, response: aiohttp.ClientResponse,
                       redactor: KeyRedactor) -> AsyncIterator[bytes]:
    """Relay SSE frames, then meter before the final [DONE] frame goes out.

    Without a complete usage report (a cut stream, a provider that sent none) the tokens are estimated
    from the text delivered (domain/estimate.py) and the record is marked usage_estimated. Every frame
    passes through `redactor`, which knows the call's key, before it goes out. Whatever goes wrong while
    relaying (a frame a translator cannot read, an answer carrying part of the key), the call is
    metered for what was delivered, with status `upstream_error`, and the stream ends with an in-band
    error instead of [DONE].
    """
    translator = adapter.stream_translator(call.request)
    messages = call.request.body.get("messages") or []
    # The input side of every estimate, worked out once per call (the messages can be many), and only
    # for a stream that needs it: a ceiling, or usage the provider did not report.
    input_tokens = functools.cache(lambda: estimate_input(messages))
    ceiling = _Ceiling(call, input_tokens()) if call.hold else None
    delivered = 0  # UTF-8 bytes of text in the frames measured so far
    unmeasured: list[bytes] = []  # without a ceiling, frames are read only if usage must be estimated
    last_chunk: dict[str, Any] | None = None

    def delivered_bytes() -> int:
        nonlocal delivered
        for frame in unmeasured:
            if (chunk := chunk_of(frame)) is not None:
                delivered += chunk_text_bytes(chunk)
        unmeasured.clear()
        return delivered

    def estimated() -> TokenUsage:
        return estimate_usage(delivered_bytes(), translator.usage, input_tokens=input_tokens())

    def usage_now() -> tuple[TokenUsage, bool]:
        if translator.finished and translator.usage is not None:
            return translator.usage, False
        return estimated(), True

    provider = call.provider.name
    try:
        cut = False
        reached: TokenUsage | None = None  # what a stream the hold stopped bills
        failure: tuple[str, str] | None = None  # (error code, message) of a stream that could not go on
        closing: list[bytes] = []
        try:
            try:
                async for payload in sse_payloads(response.content):
                    reported = translator.usage  # the counts before this payload, which frames sent bill
                    for raw in translator.feed(payload):
                        frame = redactor.frame(raw)
                        if ceiling is None:
                            unmeasured.append(frame)
                        elif (chunk := chunk_of(frame)) is not None:
                            size = chunk_text_bytes(chunk)
                            if size and not ceiling.fits(delivered + size, translator.usage):
                                # Billed tokens are the delivered ones: not the counts of the frame held back.
                                reached = estimate_usage(delivered, reported, input_tokens=input_tokens())
                                break
                            delivered += size
                            last_chunk = chunk
                        yield frame
                    if reached is not None:
                        break
            except (aiohttp.ClientError, TimeoutError):
                cut = True
            if reached is None:
                closing = [redactor.frame(frame) for frame in translator.close()]
        except KeyInAnswer:
            log.warning("call %s: %s's answer carried part of the key; ending the stream", call.request_id,
                        provider)
            failure = ("KEY_IN_ANSWER", f"{provider}'s answer was withheld because it contained part of "
                                        "the key; the answer is incomplete")
        except Exception as exc:  # a frame no translator foresaw: the call must still be metered
            log.error("call %s: the %s stream could not be relayed (%s at %s); ending it", call.request_id,
                      provider, type(exc).__name__, _where(exc))
            failure = ("MALFORMED_STREAM", f"{provider} sent a stream the gateway could not read; "
                                           "the answer is incomplete")
        if reached is not None:
            log.warning("call %s reached its hold of %s microcents; ending the stream",
                        call.request_id, call.hold)
            response.release()  # stop reading: the provider stops generating for us
            await call.meter(reached, RESERVATION_REACHED, usage_estimated=True)
            for end in _finish_frames(last_chunk, reached, call.request.include_usage, call.request_id):
                yield end
            return
        if failure is not None:
            code, message = failure
            response.release()
            await call.meter(estimated(), UPSTREAM_ERROR, 200, code, usage_estimated=True)
            yield error_frame(message, code)
            return
        for frame in closing:
            yield frame
        usage, was_estimated = usage_now()
        await call.meter(usage, "upstream_cut" if cut or not translator.finished else "ok",
                         usage_estimated=was_estimated)
        if cut or not translator.finished:
            yield error_frame(f"{provider} stopped streaming before the answer was complete",
                              "UPSTREAM_ERROR")
        else:
            yield DONE_FRAME
    finally:
        response.release()
        if not call.metered:  # set as soon as metering starts, so a cancelled meter() is not repeated
            usage, was_estimated = usage_now()
            call.meter_in_background(usage, "client_disconnected", 499, usage_estimated=was_estimated)

"""Relaying one streamed answer: SSE framing in, OpenAI chunks out, the hold as a ceiling, metering.

A platform-routed stream is held to its reservation: before each frame goes out the gateway works out
what everything delivered so far, this frame included, would bill (the provider's running counts
where it reports them, else a count of the delivered text that is rarely above the real one,
domain/estimate.py). A frame that would take that bill past the hold is not sent: the stream ends
there with `finish_reason: "length"`, the usage chunk when the client asked for it, and `[DONE]`, and
the call is billed for what was delivered, never more than the hold (docs/behaviour.md "Money").
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from alumia.domain.estimate import FEWEST_BYTES_PER_TOKEN, estimate_usage
from alumia.domain.pricing import platform_charge
from alumia.domain.usage import TokenUsage
from alumia.providers.base import Adapter
from alumia.providers.openai_compat import DONE_FRAME, error_frame, openai_usage

if TYPE_CHECKING:
    from alumia.services.proxy import Call

log = logging.getLogger("alumia.gateway")

# The status of a call whose stream the gateway ended at its reservation.
RESERVATION_REACHED = "reservation_reached"


async def sse_payloads(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
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


def chunk_of(frame: bytes) -> dict | None:
    """The chat.completion.chunk object of one `data: {...}` frame; None for anything else."""
    try:
        chunk = orjson.loads(frame[6:])
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


def chunk_text_bytes(chunk: dict) -> int:
    """UTF-8 bytes of the text a chunk delivers: content, reasoning and tool-call arguments."""
    size = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        for part in (delta.get("content"), delta.get("reasoning_content")):
            if part:
                size += len(part.encode())
        for tool_call in delta.get("tool_calls") or ():
            arguments = (tool_call.get("function") or {}).get("arguments")
            if arguments:
                size += len(arguments.encode())
    return size


class _Ceiling:
    """Whether a platform stream's bill for what it delivered still fits its hold."""

    def __init__(self, call: Call, messages: list) -> None:
        self.call, self.messages = call, messages
        self.limit = call.request.max_output_tokens or call.model.max_output_tokens
        self.request_bytes = len(call.request.raw)

    def fits(self, delivered_bytes: int, reported: TokenUsage | None) -> bool:
        """Whether delivering this much text, with the provider's counts so far, bills within the hold."""
        # Counted low (FEWEST_BYTES_PER_TOKEN) so that an honest answer is never cut short.
        usage = estimate_usage(self.messages, delivered_bytes, reported, FEWEST_BYTES_PER_TOKEN)
        # The hold was sized for request-bytes input tokens and `limit` output tokens at the dearest
        # prices, so usage within both fits without pricing it; that keeps pricing off nearly every frame.
        if usage.output_tokens <= self.limit and usage.prompt_tokens <= self.request_bytes:
            return True
        call = self.call
        charge = platform_charge(call.model.prices, usage, call.gw.fee_policy,
                                 call.ctx.cumulative_deposits_cents)
        return charge.total_microcents <= call.hold


def _finish_frames(last: dict | None, usage: TokenUsage, include_usage: bool, request_id: str) -> list[bytes]:
    """The end of a stream the gateway stopped: a "length" finish chunk, the usage chunk if asked, [DONE]."""
    identity: dict[str, Any] = {
        "id": (last or {}).get("id") or f"chatcmpl-{request_id}", "object": "chat.completion.chunk",
        "created": (last or {}).get("created") or int(time.time()), "model": (last or {}).get("model"),
    }
    frames = [b"data: " + orjson.dumps({**identity, "choices": [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]}) + b"\n\n"]
    if include_usage:
        frames.append(b"data: " + orjson.dumps({**identity, "choices": [], "usage": openai_usage(usage)})
                      + b"\n\n")
    frames.append(DONE_FRAME)
    return frames


async def relay_stream(call: Call, adapter: Adapter,
                       response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Relay SSE frames, then meter before the final [DONE] frame goes out.

    Without a complete usage report (a cut stream, a provider that sent none) the tokens are estimated
    from the text delivered (domain/estimate.py) and the record is marked usage_estimated.
    """
    translator = adapter.stream_translator(call.request)
    messages = call.request.body.get("messages") or []
    ceiling = _Ceiling(call, messages) if call.hold else None
    delivered = 0  # UTF-8 bytes of text in the frames measured so far
    unmeasured: list[bytes] = []  # without a ceiling, frames are read only if usage must be estimated
    last_chunk: dict | None = None

    def delivered_bytes() -> int:
        nonlocal delivered
        for frame in unmeasured:
            if (chunk := chunk_of(frame)) is not None:
                delivered += chunk_text_bytes(chunk)
        unmeasured.clear()
        return delivered

    def usage_now() -> tuple[TokenUsage, bool]:
        if translator.finished and translator.usage is not None:
            return translator.usage, False
        return estimate_usage(messages, delivered_bytes(), translator.usage), True

    try:
        cut = False
        try:
            async for payload in sse_payloads(response.content):
                reported = translator.usage  # the counts before this payload, which frames sent so far bill
                for frame in translator.feed(payload):
                    if ceiling is None:
                        unmeasured.append(frame)
                    elif (chunk := chunk_of(frame)) is not None:
                        size = chunk_text_bytes(chunk)
                        if size and not ceiling.fits(delivered + size, translator.usage):
                            # Billed tokens are the delivered ones: not the counts of the frame held back.
                            usage = estimate_usage(messages, delivered, reported)
                            log.warning("call %s reached its hold of %s microcents; ending the stream",
                                        call.request_id, call.hold)
                            response.release()  # stop reading: the provider stops generating for us
                            await call.meter(usage, RESERVATION_REACHED, usage_estimated=True)
                            for end in _finish_frames(last_chunk, usage, call.request.include_usage,
                                                      call.request_id):
                                yield end
                            return
                        delivered += size
                        last_chunk = chunk
                    yield frame
        except (aiohttp.ClientError, TimeoutError):
            cut = True
        for frame in translator.close():
            yield frame
        usage, estimated = usage_now()
        await call.meter(usage, "upstream_cut" if cut or not translator.finished else "ok",
                         usage_estimated=estimated)
        if cut or not translator.finished:
            yield error_frame(f"{call.provider.name} stopped streaming before the answer was complete")
        else:
            yield DONE_FRAME
    finally:
        response.release()
        if not call.metered:  # set as soon as metering starts, so a cancelled meter() is not repeated
            usage, estimated = usage_now()
            call.meter_in_background(usage, "client_disconnected", 499, usage_estimated=estimated)

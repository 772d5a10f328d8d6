"""The load generator: checked calls, phases of them, and the numbers of a phase.

Every response is checked: HTTP 200, the route the gateway must report (`X-Alumia-Route`), and the
upstream's answer arriving whole (the reply text, `usage`; for streams a usage chunk and `[DONE]`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from _procs import CpuSnapshot, CpuUse, RssSampler, Watched
from fast_upstream import MODEL, REPLY_WORDS

PROMPT = "hello benchmark"
REPLY = "".join(REPLY_WORDS)
CALL_TIMEOUT_S = 30.0
WARMUP_LIMIT_S = 10.0  # a warm-up stops after this long, whatever --phase-timeout says
MAX_ERROR_SAMPLES = 3


@dataclass(frozen=True)
class Target:
    """One way to send the benchmark call: a URL, its headers, and the route the gateway must report."""

    name: str
    url: str
    headers: dict[str, str]
    expected_route: str | None = None  # X-Alumia-Route; None for targets that are not the gateway


@dataclass(frozen=True)
class PhaseSpec:
    """What one phase sends."""

    name: str  # e.g. "c1", "stream-c32"
    stream: bool
    concurrency: int
    count: int
    warmup: int

    @property
    def title(self) -> str:
        """A heading for the phase's table."""
        kind = "Streaming" if self.stream else "Non-streaming"
        return f"{kind}, concurrency {self.concurrency} ({self.count} calls after {self.warmup} warm-up)"


def request_body(stream: bool) -> bytes:
    """The benchmark's chat-completions request."""
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)


@dataclass
class CallResult:
    """One call: whether it was right, how long it took (and to its first token), what went wrong."""

    ok: bool
    seconds: float
    first_token_s: float | None = None
    error: str | None = None


def _route_error(target: Target, response: aiohttp.ClientResponse) -> str | None:
    route = response.headers.get("X-Alumia-Route")
    if target.expected_route is not None and route != target.expected_route:
        return f"route {route!r}, expected {target.expected_route!r}"
    return None


async def _read_completion(response: aiohttp.ClientResponse) -> str | None:
    """None when the body is the upstream's completion with usage, else what is wrong with it."""
    body = orjson.loads(await response.read())
    choices = body.get("choices") or [{}]
    if choices[0].get("message", {}).get("content") != REPLY or not body.get("usage"):
        return f"not the upstream's completion: {str(body)[:200]}"
    return None


def _frame(payload: bytes) -> tuple[str, bool]:
    """(content of the frame's first choice, whether it carries usage) for one SSE data payload."""
    chunk = orjson.loads(payload)
    choices = chunk.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or "", bool(chunk.get("usage"))


async def _read_stream(response: aiohttp.ClientResponse, started: float) -> tuple[str | None, float | None]:
    """Read an SSE reply to its end; (error or None, seconds to the first content token)."""
    first: float | None = None
    text: list[str] = []
    saw_usage = saw_done = False
    async for line in response.content:
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            saw_done = True
            continue
        content, usage = _frame(payload)
        if content and first is None:
            first = time.perf_counter() - started
        text.append(content)
        saw_usage = saw_usage or usage
    if not (saw_usage and saw_done and "".join(text) == REPLY):
        return (f"stream incomplete (text {''.join(text)!r}, usage chunk {saw_usage}, "
                f"[DONE] {saw_done})"), first
    return None, first


async def one_call(session: aiohttp.ClientSession, target: Target, body: bytes, stream: bool) -> CallResult:
    """Send one call and check it: HTTP 200, the expected route, the whole answer."""
    started = time.perf_counter()
    first: float | None = None
    try:
        async with session.post(target.url, data=body, headers=target.headers) as response:
            if response.status != 200:
                text = (await response.read())[:300].decode(errors="replace")
                error: str | None = f"HTTP {response.status}: {text}"
            else:
                error = _route_error(target, response)
                if error is None and stream:
                    error, first = await _read_stream(response, started)
                elif error is None:
                    error = await _read_completion(response)
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, AttributeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return CallResult(error is None, time.perf_counter() - started, first, error)


async def run_calls(session: aiohttp.ClientSession, target: Target, *, count: int, concurrency: int,
                    stream: bool, deadline: float) -> tuple[list[CallResult], float]:
    """`count` calls, `concurrency` at a time, stopping early at `deadline`; (results, wall seconds)."""
    body = request_body(stream)
    tickets = itertools.count()
    results: list[CallResult] = []

    async def worker() -> None:
        while next(tickets) < count and time.monotonic() < deadline:
            results.append(await one_call(session, target, body, stream))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return results, time.perf_counter() - started


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(pct / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


@dataclass
class PhaseResult:
    """The numbers of one phase for one target (latencies in milliseconds)."""

    target: str
    phase: str
    concurrency: int
    requested: int
    calls: int  # measured calls made
    errors: int  # failed calls, warm-up included
    succeeded: int  # successful calls, warm-up included: what the gateway must have recorded
    seconds: float
    calls_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    ttft_p50_ms: float | None  # streams: p50 time to the first content token
    partial: bool
    cpu: CpuUse
    peak_rss_mib: float | None
    error_samples: list[str] = field(default_factory=list)


def summarize(target: str, spec: PhaseSpec, warm: list[CallResult], results: list[CallResult],
              seconds: float, cpu: CpuUse, peak_rss_mib: float | None) -> PhaseResult:
    """Turn the raw call results of one phase into its numbers."""
    ms = sorted(r.seconds * 1000 for r in results)
    firsts = sorted(r.first_token_s * 1000 for r in results if r.first_token_s is not None)
    errors = [r.error for r in [*warm, *results] if r.error]
    measured_ok = sum(r.ok for r in results)
    return PhaseResult(
        target=target, phase=spec.name, concurrency=spec.concurrency, requested=spec.count,
        calls=len(results), errors=len(errors), succeeded=measured_ok + sum(r.ok for r in warm),
        seconds=seconds, calls_per_s=measured_ok / seconds if seconds > 0 else math.nan,
        p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95), p99_ms=percentile(ms, 99),
        mean_ms=statistics.fmean(ms) if ms else math.nan,
        ttft_p50_ms=percentile(firsts, 50) if firsts else None,
        partial=len(results) < spec.count, cpu=cpu, peak_rss_mib=peak_rss_mib,
        error_samples=sorted(set(errors))[:MAX_ERROR_SAMPLES])


async def run_phase(target: Target, spec: PhaseSpec, watched: Watched, phase_seconds: float) -> PhaseResult:
    """Warm up (checked, unmeasured), then measure one phase on a fresh connection pool.

    The server's memory is sampled through warm-up and measurement; its CPU time only over the
    measured calls.
    """
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    rss = RssSampler(watched.server_pid)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as session:
        rss.start()
        warm, _ = await run_calls(session, target, count=spec.warmup, concurrency=spec.concurrency,
                                  stream=spec.stream,
                                  deadline=time.monotonic() + min(phase_seconds, WARMUP_LIMIT_S))
        before = CpuSnapshot.take(watched)
        results, seconds = await run_calls(session, target, count=spec.count, concurrency=spec.concurrency,
                                           stream=spec.stream, deadline=time.monotonic() + phase_seconds)
        cpu = CpuUse.between(before, CpuSnapshot.take(watched), len(results))
        peak = await rss.stop()
    return summarize(target.name, spec, warm, results, seconds, cpu, peak)

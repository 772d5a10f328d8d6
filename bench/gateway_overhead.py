"""What the Alumia gateway adds to a model call, measured against the simulator it forwards to.

One run starts the simulator and `alumia serve` on 127.0.0.1, seeds two orgs (one paying from its
balance: route `platform`; one with a BYOK key for openai: route `byok`), and sends the same
non-streaming `POST /v1/chat/completions` three ways: straight to the simulator (`direct`, the
baseline) and through the gateway on each route. For each it measures calls/s at concurrency 32 and
latency at concurrency 1, plus one streaming measurement, then prints the difference.

The load generator runs in this process and shares the machine's cores with the simulator, the
gateway and the database, so numbers are only comparable within one run. See bench/README.md.

    .venv/bin/python bench/gateway_overhead.py [--postgres] [--json] [--workers N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

ALUMIA = str(Path(sys.executable).with_name("alumia"))
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL_TEMPLATE = "postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
MODEL = "gpt-5.6-luna"
PROVIDER = "openai"
PROMPT = "hello benchmark"
CALL_TIMEOUT_S = 30.0
STARTUP_TIMEOUT_S = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOISE_PCT = 10.0  # warn when the rest of the machine used more than this share of all cores


class BenchError(RuntimeError):
    """The benchmark could not set up or a measurement failed."""


# --------------------------------------------------------------------------------------------------
# Options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every count is bounded and every phase has a time limit."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--requests", type=int, default=3000, help="measured calls per throughput phase")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured calls before each throughput phase")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight in throughput phases")
    p.add_argument("--latency-requests", type=int, default=500, help="measured calls at concurrency 1")
    p.add_argument("--latency-warmup", type=int, default=20, help="unmeasured calls before latency phases")
    p.add_argument("--stream-requests", type=int, default=300,
                   help="streaming calls at concurrency 1 (stream=true, include_usage)")
    p.add_argument("--no-stream", action="store_true", help="skip the streaming measurement")
    p.add_argument("--routes", default="platform,byok", help="gateway routes to measure (comma-separated)")
    p.add_argument("--workers", type=int, default=1, help="passed to `alumia serve --workers`")
    db = p.add_mutually_exclusive_group()
    db.add_argument("--database-url",
                    help="an EMPTY database to use instead of a SQLite file in a temp dir (kept afterwards)")
    db.add_argument("--postgres", action="store_true",
                    help="a fresh PostgreSQL database on 127.0.0.1:5432, dropped at the end")
    p.add_argument("--phase-timeout", type=float, default=60.0,
                   help="seconds after which a phase's warm-up or measurement stops sending "
                        "(the numbers are then marked PARTIAL)")
    p.add_argument("--json", action="store_true", help="also print the numbers as one JSON object")
    args = p.parse_args(argv)
    args.routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if not args.routes or not set(args.routes) <= {"platform", "byok"}:
        p.error("--routes takes platform and/or byok")
    for name in ("requests", "concurrency", "latency_requests", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("warmup", "latency_warmup", "stream_requests"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    return args


# --------------------------------------------------------------------------------------------------
# Processes, database and seed data


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environ() -> dict[str, str]:
    """This process's environment without any ALUMIA_* setting, so the run does not depend on the shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ALUMIA_")}


def run_cli(env: dict[str, str], *args: str) -> str:
    """Run `alumia <args>` with `env` and return its stdout; raise with its stderr when it fails."""
    done = subprocess.run([ALUMIA, *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"`alumia {' '.join(args)}` failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def parse_env_lines(text: str) -> dict[str, str]:
    """KEY=VALUE lines (as printed by `alumia sim --print-env`) as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class ManagedProcess:
    """A child process in its own session, logging to a file; `stop` terminates it and waits."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (not yet waiting for it to be ready)."""
        with self.log_path.open("wb") as log:
            # Own session: Ctrl-C reaches only us, and we stop the children in order.
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.process is not None
        return self.process.pid

    def wait_http_ok(self, url: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Poll `url` until it answers 200; fail with the log when the process exits or time runs out."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not answer {url} within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's log."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM, wait up to 15 s, then SIGKILL the child's own process group."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only its processes
            self.process.wait(timeout=5)


@contextmanager
def managed(proc: ManagedProcess) -> Iterator[ManagedProcess]:
    """Start `proc` and stop it on the way out, whatever happens."""
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


async def _pg_admin(sql: str) -> None:
    import asyncpg  # only needed with --postgres

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database alumia_bench_<hex>, dropped (connections ended) on the way out."""
    name = "alumia_bench_" + secrets.token_hex(6)
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        raise BenchError(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc}") from exc
    try:
        yield PG_URL_TEMPLATE.format(name=name)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass(frozen=True)
class Target:
    """One way to send the benchmark call: a URL, its headers, and the route the gateway must report."""

    name: str
    url: str
    headers: dict[str, str]
    expected_route: str | None  # X-Alumia-Route; None for the simulator, which sends no such header


def create_org(env: dict[str, str], slug: str, deposit_cents: int) -> str:
    """Create an org (and its owner) with the CLI, optionally deposit, and return an API key for it."""
    run_cli(env, "org", "create", "--slug", slug, "--owner-email", f"o@{slug}.test", "--json")
    if deposit_cents:
        run_cli(env, "billing", "deposit", "--org", slug, "--cents", str(deposit_cents), "--json")
    return json.loads(run_cli(env, "apikey", "create", "--org", slug, "--json"))["key"]


def add_byok_key(gateway_url: str, alm_key: str) -> None:
    """Give the key's org a BYOK key for the benchmark's provider through the management API."""
    response = httpx.post(f"{gateway_url}/api/v1/billing/byok-keys", timeout=10,
                          headers={"Authorization": f"Bearer {alm_key}"},
                          json={"provider": PROVIDER, "apiKey": "sk-bench-" + secrets.token_hex(16)})
    if response.status_code != 201:
        raise BenchError(f"adding the BYOK key failed: HTTP {response.status_code} {response.text[:300]}")


def build_targets(sim_env: dict[str, str], gateway_url: str, keys: dict[str, str]) -> list[Target]:
    """`direct` (the simulator itself) and one gateway target per seeded route."""
    direct = Target("direct", sim_env[f"ALUMIA_BASE_URL_{PROVIDER.upper()}"] + "/chat/completions",
                    {"Authorization": "Bearer sk-bench-direct-" + secrets.token_hex(16)}, None)
    through = [Target(route, f"{gateway_url}/v1/chat/completions", {"Authorization": f"Bearer {key}"}, route)
               for route, key in keys.items()]
    return [direct, *through]


# --------------------------------------------------------------------------------------------------
# CPU accounting (from /proc: which process spent the cores during a phase)


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """A process as /proc shows it: parent, command line, CPU seconds (all its threads)."""

    ppid: int
    cmdline: str
    cpu_s: float


def _read_proc(entry: Path) -> ProcInfo | None:
    try:
        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return None
    # proc(5) stat fields 4 (ppid), 14 and 15 (utime, stime); the list starts at field 3.
    return ProcInfo(int(fields[1]), cmdline, (int(fields[11]) + int(fields[12])) / CLK_TCK)


def _process_table() -> dict[int, ProcInfo]:
    """Every process we can see, by pid."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _read_proc(entry)) is not None:
            table[int(entry.name)] = info
    return table


def _tree(table: dict[int, ProcInfo], root: int) -> list[int]:
    """`root` and every process below it (`alumia serve --workers N` forks workers)."""
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info.ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return [pid for pid in found if pid in table]


def _machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores summed."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def machine_busy_pct(seconds: float = 1.0) -> float:
    """How busy the machine is over `seconds` (all cores), before we add any load."""
    busy0, total0 = _machine_cpu_s()
    time.sleep(seconds)
    busy1, total1 = _machine_cpu_s()
    return 100 * (busy1 - busy0) / max(total1 - total0, 1e-9)


@dataclass(frozen=True)
class Watched:
    """The processes whose CPU time a run attributes: simulator and gateway trees, database backends."""

    sim_pid: int
    gateway_pid: int
    db_name: str | None = None  # the PostgreSQL database; None for SQLite (it runs inside the gateway)
    db_dsn: str | None = None  # an asyncpg DSN for it, to read pg_stat_database


def _serves(cmdline: str, db_name: str | None) -> bool:
    """Whether a PostgreSQL process works for the run's database.

    Backends are titled "postgres: [<cluster>:] <user> <database> <host(port)|[local]> <state>"; those
    of other databases belong to someone else. The shared processes (WAL writer, checkpointer,
    autovacuum, ...) are counted as ours: on a quiet machine the run is what keeps them busy.
    """
    if db_name is None or not cmdline.startswith("postgres: "):
        return False
    words = cmdline.split()
    client = next((i for i, w in enumerate(words) if "(" in w or w == "[local]"), None)
    return client is None or words[client - 1] == db_name


@dataclass
class CpuSnapshot:
    """CPU seconds used so far, per live process, by each party; the whole machine; database sessions.

    `others` is every other process we can see (neighbours, kernel threads). A process that exits
    between two snapshots takes its CPU time with it (it then counts as `kernel` in CpuUse); for the
    database, `db_sessions` (pg_stat_database.sessions) tells how many connections were opened.
    """

    parties: dict[str, dict[int, float]]
    machine_busy: float
    machine_total: float
    db_sessions: int | None

    @classmethod
    def take(cls, watched: Watched, db_sessions: int | None) -> CpuSnapshot:
        """Read the counters now."""
        table = _process_table()
        groups = {"loadgen": [os.getpid()], "sim": _tree(table, watched.sim_pid),
                  "gateway": _tree(table, watched.gateway_pid),
                  "db": [pid for pid, info in table.items() if _serves(info.cmdline, watched.db_name)]}
        ours = {pid for pids in groups.values() for pid in pids}
        groups["others"] = [pid for pid in table if pid not in ours]
        parties = {party: {pid: table[pid].cpu_s for pid in pids} for party, pids in groups.items()}
        busy, total = _machine_cpu_s()
        return cls(parties, busy, total, db_sessions)

    def used_since(self, earlier: CpuSnapshot, party: str) -> float:
        """CPU seconds `party` used between `earlier` and this snapshot (new processes count whole)."""
        before = earlier.parties[party]
        return sum(now - before.get(pid, 0.0) for pid, now in self.parties[party].items())


class Probe:
    """Takes CpuSnapshots; on PostgreSQL it keeps one connection to read the sessions counter."""

    def __init__(self, watched: Watched) -> None:
        self.watched = watched
        self._conn: Any = None

    async def __aenter__(self) -> Probe:
        if self.watched.db_dsn:
            import asyncpg  # only needed on PostgreSQL

            self._conn = await asyncpg.connect(self.watched.db_dsn, timeout=5)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def snapshot(self) -> CpuSnapshot:
        """The counters now."""
        sessions = None
        if self._conn is not None:
            await self._conn.execute("SELECT pg_stat_clear_snapshot()")
            sessions = await self._conn.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return CpuSnapshot.take(self.watched, sessions)


@dataclass
class CpuUse:
    """CPU spent during one phase: milliseconds per call for each party, and how busy the machine was."""

    loadgen_ms: float
    sim_ms: float
    gateway_ms: float  # with SQLite this includes the database (aiosqlite runs in the gateway process)
    db_ms: float  # PostgreSQL: live backends of the run's database and the server's shared processes
    others_ms: float  # every other live process: neighbours, kernel threads
    kernel_ms: float  # busy time no live process was charged: interrupts, scheduling, exited processes
    machine_busy_pct: float  # all cores
    others_busy_pct: float  # the part of machine_busy_pct that is `others` (neighbours)
    db_connections_opened: int | None  # PostgreSQL sessions opened on the run's database in the phase

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot, calls: int) -> CpuUse:
        """The use between two snapshots, per call."""
        per_call = 1000 / max(calls, 1)
        used = {party: b.used_since(a, party) for party in a.parties}
        busy, total = b.machine_busy - a.machine_busy, b.machine_total - a.machine_total
        kernel = max(busy - sum(used.values()), 0.0)
        total = max(total, 1e-9)
        return cls(loadgen_ms=used["loadgen"] * per_call, sim_ms=used["sim"] * per_call,
                   gateway_ms=used["gateway"] * per_call, db_ms=used["db"] * per_call,
                   others_ms=used["others"] * per_call, kernel_ms=kernel * per_call,
                   machine_busy_pct=100 * busy / total, others_busy_pct=100 * used["others"] / total,
                   db_connections_opened=(None if a.db_sessions is None or b.db_sessions is None
                                          else b.db_sessions - a.db_sessions))


# --------------------------------------------------------------------------------------------------
# Load generation


def request_body(stream: bool) -> bytes:
    """The benchmark's chat-completions request."""
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)


@dataclass
class CallResult:
    """One call: whether it was right, how long it took (and to its first SSE frame), what went wrong."""

    ok: bool
    seconds: float
    first_frame_s: float | None = None
    error: str | None = None


def _route_error(target: Target, response: aiohttp.ClientResponse) -> str | None:
    route = response.headers.get("X-Alumia-Route")
    if target.expected_route is not None and route != target.expected_route:
        return f"route {route!r}, expected {target.expected_route!r}"
    return None


async def _read_completion(response: aiohttp.ClientResponse) -> str | None:
    """None when the body is a chat completion with usage, else what is wrong with it."""
    body = orjson.loads(await response.read())
    if not body.get("choices") or not body.get("usage"):
        return f"not a completion: {str(body)[:200]}"
    return None


async def _read_stream(response: aiohttp.ClientResponse, started: float) -> tuple[str | None, float | None]:
    """Read an SSE reply to its end; (error or None, seconds to the first data frame)."""
    first: float | None = None
    saw_usage = saw_done = False
    async for line in response.content:
        if not line.startswith(b"data:"):
            continue
        if first is None:
            first = time.perf_counter() - started
        payload = line[5:].strip()
        if payload == b"[DONE]":
            saw_done = True
        elif b'"usage":{' in payload:
            saw_usage = True
    if not (saw_usage and saw_done):
        return f"stream incomplete (usage chunk {saw_usage}, [DONE] {saw_done})", first
    return None, first


async def one_call(session: aiohttp.ClientSession, target: Target, body: bytes, stream: bool) -> CallResult:
    """Send one call and check it: HTTP 200, the expected route, a complete answer."""
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
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
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
    kind: str  # throughput | latency | stream
    concurrency: int
    requested: int
    calls: int
    errors: int
    seconds: float
    calls_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    first_frame_p50_ms: float | None
    partial: bool
    cpu: CpuUse
    error_samples: list[str] = field(default_factory=list)


def summarize(target: str, kind: str, concurrency: int, requested: int, results: list[CallResult],
              seconds: float, cpu: CpuUse) -> PhaseResult:
    """Turn the raw call results of one phase into its numbers."""
    ms = sorted(r.seconds * 1000 for r in results)
    firsts = sorted(r.first_frame_s * 1000 for r in results if r.first_frame_s is not None)
    errors = [r.error for r in results if r.error]
    return PhaseResult(
        target=target, kind=kind, concurrency=concurrency, requested=requested, calls=len(results),
        errors=len(errors), seconds=seconds, calls_per_s=(len(results) - len(errors)) / seconds,
        p50_ms=percentile(ms, 50), p90_ms=percentile(ms, 90), p99_ms=percentile(ms, 99),
        mean_ms=statistics.fmean(ms) if ms else math.nan,
        first_frame_p50_ms=percentile(firsts, 50) if firsts else None,
        partial=len(results) < requested, cpu=cpu, error_samples=sorted(set(errors))[:3])


@dataclass(frozen=True)
class PhaseSpec:
    """What one phase sends."""

    kind: str  # throughput | latency | stream
    count: int
    warmup: int
    concurrency: int
    stream: bool


async def run_phase(target: Target, spec: PhaseSpec, probe: Probe, phase_seconds: float) -> PhaseResult:
    """Warm up (checked, unmeasured), then measure one phase on a fresh connection pool."""
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    call_timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=call_timeout) as session:
        warm, _ = await run_calls(session, target, count=spec.warmup, concurrency=spec.concurrency,
                                  stream=spec.stream, deadline=time.monotonic() + phase_seconds)
        if failed := [r.error for r in warm if r.error]:
            raise BenchError(f"{target.name} {spec.kind} warm-up: {len(failed)}/{len(warm)} calls failed, "
                             f"e.g. {failed[0]}")
        before = await probe.snapshot()
        results, seconds = await run_calls(session, target, count=spec.count, concurrency=spec.concurrency,
                                           stream=spec.stream, deadline=time.monotonic() + phase_seconds)
        cpu = CpuUse.between(before, await probe.snapshot(), len(results))
    return summarize(target.name, spec.kind, spec.concurrency, spec.count, results, seconds, cpu)


def phase_specs(args: argparse.Namespace) -> list[PhaseSpec]:
    """The phases of a run, in order."""
    specs = [PhaseSpec("throughput", args.requests, args.warmup, args.concurrency, stream=False),
             PhaseSpec("latency", args.latency_requests, args.latency_warmup, 1, stream=False)]
    if not args.no_stream and args.stream_requests > 0:
        specs.append(PhaseSpec("stream", args.stream_requests, args.latency_warmup, 1, stream=True))
    return specs


async def measure(targets: list[Target], specs: list[PhaseSpec], watched: Watched,
                  phase_seconds: float) -> list[PhaseResult]:
    """Every phase for every target; within a phase the targets run back to back."""
    results = []
    async with Probe(watched) as probe:
        for spec in specs:
            for target in targets:
                print(f"  {spec.kind:<10} {target.name:<8} ...", end="", flush=True, file=sys.stderr)
                result = await run_phase(target, spec, probe, phase_seconds)
                print(f" {result.calls_per_s:8.1f} calls/s  p50 {result.p50_ms:7.2f} ms", file=sys.stderr)
                results.append(result)
    return results


# --------------------------------------------------------------------------------------------------
# Report


def comparisons(results: list[PhaseResult]) -> list[dict[str, Any]]:
    """Each gateway phase against the direct phase of the same kind: ratio and added milliseconds."""
    direct = {r.kind: r for r in results if r.target == "direct"}
    out = []
    for r in results:
        base = direct.get(r.kind)
        if r.target == "direct" or base is None:
            continue
        out.append({
            "kind": r.kind, "target": r.target,
            "throughput_ratio": r.calls_per_s / base.calls_per_s if base.calls_per_s else math.nan,
            "added_p50_ms": r.p50_ms - base.p50_ms, "added_p90_ms": r.p90_ms - base.p90_ms,
            "added_p99_ms": r.p99_ms - base.p99_ms, "added_mean_ms": r.mean_ms - base.mean_ms,
            "gateway_cpu_ms_per_call": r.cpu.gateway_ms, "db_cpu_ms_per_call": r.cpu.db_ms,
        })
    return out


def _fmt(value: float | None, width: int = 8, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None or math.isnan(value) else f"{value:>{width}.{digits}f}"


def _count(value: int | None, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


def _flag(r: PhaseResult) -> str:
    return "  PARTIAL" if r.partial else ""


def _throughput_table(rows: list[PhaseResult], direct: PhaseResult | None) -> list[str]:
    lines = [f"{'target':<9}{'calls/s':>9}{'x direct':>10}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}"
             f"   CPU ms/call: {'loadgen':>7}{'sim':>7}{'gateway':>8}{'db':>7}{'others':>7}{'kernel':>7}"
             f"{'busy%':>6}{'db conns':>9}"]
    for r in rows:
        ratio = r.calls_per_s / direct.calls_per_s if direct and direct.calls_per_s else math.nan
        c = r.cpu
        lines.append(f"{r.target:<9}{_fmt(r.calls_per_s, 9, 1)}{_fmt(ratio, 10, 3)}{r.errors:>8}"
                     f"{_fmt(r.p50_ms, 9)}{_fmt(r.p99_ms, 9)}   {'':13}{_fmt(c.loadgen_ms, 7)}"
                     f"{_fmt(c.sim_ms, 7)}{_fmt(c.gateway_ms, 8)}{_fmt(c.db_ms, 7)}{_fmt(c.others_ms, 7)}"
                     f"{_fmt(c.kernel_ms, 7)}{_fmt(c.machine_busy_pct, 6, 0)}"
                     f"{_count(c.db_connections_opened, 9)}{_flag(r)}")
    return lines


def _latency_table(rows: list[PhaseResult], direct: PhaseResult | None, stream: bool) -> list[str]:
    head = f"{'target':<9}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}"
    head += f"{'1st frm':>9}" if stream else ""
    head += f"   added: {'p50':>7}{'p90':>8}{'p99':>8}{'mean':>8}{'errors':>8}   gateway+db CPU ms/call"
    lines = [head]
    for r in rows:
        line = f"{r.target:<9}{_fmt(r.p50_ms)}{_fmt(r.p90_ms)}{_fmt(r.p99_ms)}{_fmt(r.mean_ms)}"
        line += _fmt(r.first_frame_p50_ms, 9) if stream else ""
        if direct is None or r is direct:
            line += f"   {'':6}{'-':>7}{'-':>8}{'-':>8}{'-':>8}"
        else:
            line += (f"   {'':6}{_fmt(r.p50_ms - direct.p50_ms, 7)}{_fmt(r.p90_ms - direct.p90_ms)}"
                     f"{_fmt(r.p99_ms - direct.p99_ms)}{_fmt(r.mean_ms - direct.mean_ms)}")
        lines.append(f"{line}{r.errors:>8}{_fmt(r.cpu.gateway_ms + r.cpu.db_ms, 12)}{_flag(r)}")
    return lines


TITLES = {
    "throughput": "Throughput, non-streaming, concurrency {c}, {n} calls after {w} warm-up",
    "latency": "Latency in ms, non-streaming, concurrency {c}, {n} calls",
    "stream": "Streaming latency in ms (stream=true, include_usage), concurrency {c}, {n} calls; "
              "'1st frm' = p50 to the first SSE frame",
}


def render(meta: dict[str, Any], results: list[PhaseResult]) -> str:
    """The human-readable report."""
    lines = [f"Alumia gateway overhead — POST /v1/chat/completions, model {MODEL} ({PROVIDER})",
             f"{meta['date']}  nproc {meta['nproc']}  python {meta['python']}  database {meta['database']}"
             f"  gateway workers {meta['workers']}  machine busy before start {meta['busy_before_pct']:.0f}%",
             ""]
    for kind, title in TITLES.items():
        rows = [r for r in results if r.kind == kind]
        if not rows:
            continue
        direct = next((r for r in rows if r.target == "direct"), None)
        lines.append(title.format(c=rows[0].concurrency, n=rows[0].requested, w=meta["warmup"]))
        table = (_throughput_table(rows, direct) if kind == "throughput"
                 else _latency_table(rows, direct, stream=kind == "stream"))
        lines += ["  " + line for line in table] + [""]
    return "\n".join(lines + _summary_lines(meta, results))


def _summary_lines(meta: dict[str, Any], results: list[PhaseResult]) -> list[str]:
    lines = ["Gateway vs direct"]
    for c in comparisons(results):
        if c["kind"] == "throughput":
            lines.append(f"  {c['target']:<9} throughput {c['throughput_ratio']:.3f}x direct; the gateway "
                         f"process spends {c['gateway_cpu_ms_per_call']:.2f} CPU ms per call")
        else:
            lines.append(f"  {c['target']:<9} {c['kind']:<10} adds {c['added_p50_ms']:.2f} ms at p50, "
                         f"{c['added_p90_ms']:.2f} at p90, {c['added_p99_ms']:.2f} at p99, "
                         f"{c['added_mean_ms']:.2f} mean")
    lines += _loadgen_lines(results)
    lines += _noise_lines(meta, results)
    errors = sum(r.errors for r in results)
    lines.append(f"Errors: {errors}" + ("" if not errors else " — " + "; ".join(
        f"{r.kind}/{r.target}: {r.error_samples}" for r in results if r.errors)))
    if any(r.partial for r in results):
        lines.append("PARTIAL: a phase hit --phase-timeout before sending all its calls")
    return lines


def _loadgen_lines(results: list[PhaseResult]) -> list[str]:
    """Whether the load generator's own ceiling could have limited the gateway's throughput rows."""
    rows = [r for r in results if r.kind == "throughput"]
    direct = next((r for r in rows if r.target == "direct"), None)
    if direct is None:
        return []
    core_pct = direct.cpu.loadgen_ms * direct.calls_per_s / 10
    fastest = max((r.calls_per_s for r in rows if r is not direct), default=0.0)
    verdict = ("well above every gateway row, so the load generator is not their limit"
               if fastest < 0.5 * direct.calls_per_s else
               "CLOSE to a gateway row: the load generator may be limiting it")
    lines = [f"Load generator: drove the simulator at {direct.calls_per_s:.0f} calls/s using {core_pct:.0f}% "
             f"of one core; {verdict}"]
    if core_pct > 80:
        lines.append("  (the direct row is itself bounded by the load generator: the simulator can do more, "
                     "so 'x direct' overstates the gateway's share)")
    return lines


def _noise_lines(meta: dict[str, Any], results: list[PhaseResult]) -> list[str]:
    """Warnings when something besides the benchmark used the machine (neighbours skew every number)."""
    lines = []
    if meta["busy_before_pct"] > NOISE_PCT:
        lines.append(f"WARNING: the machine was {meta['busy_before_pct']:.0f}% busy before the run started")
    noisy = [f"{r.kind}/{r.target} {r.cpu.others_busy_pct:.0f}%" for r in results
             if r.cpu.others_busy_pct > NOISE_PCT]
    if noisy:
        lines.append("WARNING: other processes used the machine during " + ", ".join(noisy)
                     + " (share of all cores); numbers from this run are not comparable")
    return lines


def _no_nan(value: Any) -> Any:
    """`value` with every NaN (a phase without successful calls) replaced by None, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def report_json(meta: dict[str, Any], results: list[PhaseResult]) -> str:
    """The numbers as one JSON object."""
    report = {"meta": meta, "phases": [asdict(r) for r in results], "comparisons": comparisons(results)}
    return json.dumps(_no_nan(report), indent=2, allow_nan=False)


# --------------------------------------------------------------------------------------------------
# Main


def database_url(args: argparse.Namespace, stack: ExitStack, data_dir: Path) -> str:
    """The database for this run: --database-url, a fresh PostgreSQL database, or a temp SQLite file."""
    if args.database_url:
        return args.database_url
    if args.postgres:
        return stack.enter_context(postgres_database())
    return f"sqlite+aiosqlite:///{data_dir / 'alumia.db'}"


def pg_database_name(url: str) -> str | None:
    """The database name of a PostgreSQL URL (to find its backends' CPU time); None for SQLite."""
    if not url.startswith("postgresql"):
        return None
    return url.rsplit("/", 1)[1].split("?", 1)[0] or None


def run_meta(args: argparse.Namespace, db_url: str, busy_before_pct: float) -> dict[str, Any]:
    """What the run was, for the report."""
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "nproc": os.cpu_count(),
            "python": platform.python_version(), "database": db_url.split("+", 1)[0],
            "workers": args.workers, "model": MODEL, "warmup": args.warmup,
            "concurrency": args.concurrency, "busy_before_pct": busy_before_pct}


def seed_orgs(env: dict[str, str], routes: list[str]) -> dict[str, str]:
    """route -> API key: `bench` pays from its balance; `bench-byok` will get a BYOK key."""
    keys = {}
    if "platform" in routes:
        keys["platform"] = create_org(env, "bench", deposit_cents=500_000)
    if "byok" in routes:
        keys["byok"] = create_org(env, "bench-byok", deposit_cents=0)
    return keys


def start_stack(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> tuple[list[Target], Watched, str]:
    """Simulator, database, seed data and gateway, all stopped by `stack`; (targets, watched, db URL)."""
    base = clean_environ()
    sim_port, gw_port = free_port(), free_port()
    sim_env = parse_env_lines(run_cli(base, "sim", "--port", str(sim_port), "--print-env"))
    sim = stack.enter_context(managed(ManagedProcess(
        "simulator", [ALUMIA, "sim", "--port", str(sim_port)], base, tmp / "sim.log")))
    db_url = database_url(args, stack, tmp)
    env = {**base, **sim_env, "ALUMIA_DATA_DIR": str(tmp), "ALUMIA_DATABASE_URL": db_url,
           "ALUMIA_LOG_LEVEL": "WARNING"}
    run_cli(env, "db", "upgrade")
    keys = seed_orgs(env, args.routes)
    sim.wait_http_ok(f"http://127.0.0.1:{sim_port}/_sim/calls")
    gateway = stack.enter_context(managed(ManagedProcess(
        "gateway", [ALUMIA, "serve", "--port", str(gw_port), "--workers", str(args.workers)], env,
        tmp / "gateway.log")))
    gateway_url = f"http://127.0.0.1:{gw_port}"
    gateway.wait_http_ok(f"{gateway_url}/healthz")
    if "byok" in keys:
        add_byok_key(gateway_url, keys["byok"])
    db_name = pg_database_name(db_url)
    dsn = db_url.replace("postgresql+asyncpg://", "postgresql://", 1) if db_name else None
    watched = Watched(sim.pid, gateway.pid, db_name, dsn)
    return build_targets(sim_env, gateway_url, keys), watched, db_url


def _raise_system_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every call succeeded, 1 when any failed, 2 when it could not run."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_system_exit)  # cleanup runs on SIGTERM as on Ctrl-C
    busy_before = machine_busy_pct()
    try:
        with tempfile.TemporaryDirectory(prefix="alumia-bench-") as tmp_name, ExitStack() as stack:
            targets, watched, db_url = start_stack(args, stack, Path(tmp_name))
            print(f"measuring {', '.join(t.name for t in targets)} ...", file=sys.stderr)
            results = asyncio.run(measure(targets, phase_specs(args), watched, args.phase_timeout))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; every process and temporary file was cleaned up", file=sys.stderr)
        return 130
    meta = run_meta(args, db_url, busy_before)
    print(render(meta, results))
    if args.json:
        print(report_json(meta, results))
    if any(r.errors for r in results):
        print("FAILED: some calls did not succeed (see Errors above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

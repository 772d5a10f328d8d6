"""What a gateway adds to a model call: Alumia, a bare pass-through and LiteLLM, side by side, in one run.

Starts a fast OpenAI-shaped upstream (bench/fast_upstream.py) and sends the same chat-completions
call to it directly (`direct`), through a bare aiohttp pass-through (bench/passthrough_proxy.py, the
floor of a Python gateway), through `alumia serve` on SQLite and on PostgreSQL (platform and byok
routes), and through the LiteLLM proxy (installed into bench/.litellm-venv on first use). Each target
gets four phases: non-streaming and streaming at concurrency 1 and 32. Servers run pinned to one core,
the load generator and the upstream to the other. After each gateway run its database is checked
against the calls made. Everything is repeated (--repeat, default 3) and the medians reported.

    .venv/bin/python bench/gateway_overhead.py [--quick] [--no-litellm] [--write-results] ...

See bench/README.md for what the numbers mean and bench/results.md for a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

import _litellm
from _db_checks import Check, check_states, org_states, wait_settled
from _load import PhaseResult, PhaseSpec, Target, run_phase
from _procs import (
    BenchError,
    ManagedProcess,
    Pinning,
    Watched,
    allowed_cores,
    free_port,
    listening_socket,
    machine_busy_pct,
    managed,
    pin_self,
    plan_pinning,
    wait_rss_settled,
)
from _report import (
    LEGEND,
    RepCheck,
    RepResult,
    Row,
    error_lines,
    median_rows,
    noise_lines,
    partial_lines,
    render_checks,
    render_phase_tables,
    rows_of_phase,
    versus_litellm,
    workers_table,
)
from fast_upstream import MODEL

BENCH = Path(__file__).resolve().parent
ALUMIA = str(Path(sys.executable).with_name("alumia"))
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL_TEMPLATE = "postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
PROVIDER = "openai"
RESULTS_MD = BENCH / "results.md"
# (calls, warm-up) per phase: the full default and --quick.
PROFILES = {
    "full": {"c1": (200, 20), "c32": (600, 64), "stream-c1": (150, 20), "stream-c32": (500, 64)},
    "quick": {"c1": (50, 10), "c32": (200, 64), "stream-c1": (40, 10), "stream-c32": (150, 64)},
}
ORGS = {"platform": "bench", "byok": "bench-byok"}  # route -> org slug
STARTED = time.monotonic()


# --------------------------------------------------------------------------------------------------
# Options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every count is bounded and every phase has a time limit."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer calls, one repetition, no --workers 2 comparison: a fast look")
    p.add_argument("--repeat", type=int, help="repetitions (default 3; 1 with --quick)")
    p.add_argument("--calls", type=int, nargs=4, metavar=("C1", "C32", "S1", "S32"),
                   help="measured calls per phase: non-streaming c=1, c=32, streaming c=1, c=32 "
                        "(default 200 600 150 500; --quick 50 200 40 150)")
    p.add_argument("--concurrency", type=int, default=32,
                   help="calls in flight in the high-concurrency phases")
    p.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out (and do not install it)")
    p.add_argument("--no-postgres", action="store_true", help="leave the gateway on PostgreSQL out")
    p.add_argument("--no-passthrough", action="store_true", help="leave the bare pass-through out")
    p.add_argument("--workers-compare", action=argparse.BooleanOptionalAction, default=None,
                   help="also run the gateway's non-streaming high-concurrency phase with --workers 2 "
                        "(default: on, off with --quick)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--tree", type=Path, default=BENCH.parent / "src",
                   help="the src/ directory whose alumia package the gateway runs (PYTHONPATH)")
    p.add_argument("--max-minutes", type=float, default=14.0,
                   help="skip the next repetition (or the --workers 2 comparison) when it would likely end "
                        "after this many minutes from the start; at least one repetition always runs")
    p.add_argument("--phase-timeout", type=float, default=30.0,
                   help="seconds after which a phase's warm-up or measurement stops sending (PARTIAL)")
    p.add_argument("--write-results", action="store_true", help=f"append the report to {RESULTS_MD}")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every number to FILE as JSON")
    p.add_argument("--py-spy", metavar="TARGET:PHASE",
                   help="record the server with py-spy during that phase's measured calls, e.g. "
                        "sqlite-platform:stream-c32 (summarise with bench/profile_summary.py)")
    p.add_argument("--py-spy-out", type=Path, default=Path("profile.txt"), metavar="FILE",
                   help="where --py-spy writes py-spy's raw (collapsed) stacks, one file per repetition")
    args = p.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if args.workers_compare is None:
        args.workers_compare = not args.quick
    if args.calls:
        profile = {name: (calls, warm) for (name, (_, warm)), calls in zip(profile.items(), args.calls,
                                                                            strict=True)}
    args.profile = profile
    if args.repeat < 1 or args.concurrency < 1 or any(n < 1 for n, _ in profile.values()):
        p.error("--repeat, --concurrency and --calls must be at least 1")
    if not (args.tree / "alumia").is_dir():
        p.error(f"--tree {args.tree} has no alumia package")
    return args


def phase_specs(args: argparse.Namespace) -> list[PhaseSpec]:
    """The four phases, in the order they run."""
    high = args.concurrency
    shapes = {"c1": (False, 1), "c32": (False, high), "stream-c1": (True, 1), "stream-c32": (True, high)}
    return [PhaseSpec(name, stream, conc, *args.profile[name]) for name, (stream, conc) in shapes.items()]


# --------------------------------------------------------------------------------------------------
# The run's shared state


@dataclass
class Context:
    """What every server of the run shares: options, cores, the upstream, the base environment."""

    args: argparse.Namespace
    pinning: Pinning
    tmp: Path
    base_env: dict[str, str]
    upstream_url: str = ""
    upstream_key: str = ""
    upstream_pid: int = 0
    litellm: _litellm.LiteLLMInstall | None = None
    postgres_skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    def log_path(self, name: str) -> Path:
        """A fresh log file for a child process."""
        fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=self.tmp)
        os.close(fd)
        return Path(path)


@dataclass
class Server:
    """A running server and the targets that go through it (`direct` has no server)."""

    name: str
    targets: list[Target]
    process: ManagedProcess | None = None
    db_url: str | None = None
    org_of: dict[str, str] = field(default_factory=dict)  # target name -> org slug (gateways)

    @property
    def db_name(self) -> str | None:
        """The PostgreSQL database's name (to attribute its backends' CPU time); None otherwise."""
        if not self.db_url or not self.db_url.startswith("postgresql"):
            return None
        return self.db_url.rsplit("/", 1)[1].split("?", 1)[0]


def clean_environ() -> dict[str, str]:
    """This process's environment without ALUMIA_* settings or PYTHONPATH: the run decides them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ALUMIA_") and k != "PYTHONPATH"}


def say(text: str) -> None:
    """Progress, on stderr, with the minutes and seconds since the start."""
    seconds = int(time.monotonic() - STARTED)
    print(f"[{seconds // 60:2d}:{seconds % 60:02d}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Upstream, pass-through, LiteLLM


def start_upstream(ctx: Context, stack: ExitStack) -> None:
    """The fast upstream for the whole run, on the client core, on a socket bound to port 0."""
    sock = listening_socket()
    argv = [sys.executable, str(BENCH / "fast_upstream.py"), "--fd", str(sock.fileno())]
    proc = ManagedProcess("upstream", argv, ctx.base_env, ctx.log_path("upstream"), pinning=ctx.pinning,
                          cores=ctx.pinning.client, pass_fds=(sock.fileno(),))
    ctx.upstream_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with sock:
        stack.enter_context(managed(proc))
    ctx.upstream_key = "sk-test-" + secrets.token_hex(8)
    ctx.upstream_pid = proc.pid
    proc.wait_http_ok(f"{ctx.upstream_url}/models")


@contextmanager
def direct_server(ctx: Context) -> Iterator[Server]:
    """The upstream itself: the baseline."""
    yield Server("direct", [Target("direct", f"{ctx.upstream_url}/chat/completions",
                                   {"Authorization": f"Bearer {ctx.upstream_key}"})])


@contextmanager
def passthrough_server(ctx: Context) -> Iterator[Server]:
    """The bare aiohttp pass-through on the server core."""
    sock = listening_socket()
    argv = [sys.executable, str(BENCH / "passthrough_proxy.py"), "--fd", str(sock.fileno()),
            "--upstream", ctx.upstream_url, "--key", ctx.upstream_key]
    proc = ManagedProcess("passthrough", argv, ctx.base_env, ctx.log_path("passthrough"), pinning=ctx.pinning,
                          cores=ctx.pinning.server, pass_fds=(sock.fileno(),))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with sock, managed(proc):
        sock.close()  # the child holds it now; if it dies, calls are refused instead of queued
        proc.wait_http_ok(f"{url}/healthz")
        yield Server("passthrough", [Target("passthrough", f"{url}/v1/chat/completions",
                                            {"Authorization": "Bearer client-key-ignored"})], proc)


@contextmanager
def litellm_server(ctx: Context) -> Iterator[Server]:
    """The LiteLLM proxy, one worker, no database, on the server core."""
    assert ctx.litellm is not None and ctx.litellm.executable is not None
    home = Path(tempfile.mkdtemp(prefix="litellm-home-", dir=ctx.tmp))
    config, master_key = _litellm.write_config(home, ctx.upstream_url, ctx.upstream_key)
    port = free_port()
    proc = ManagedProcess("litellm", _litellm.litellm_argv(ctx.litellm.executable, config, port),
                          _litellm.litellm_env(ctx.base_env, home), ctx.log_path("litellm"),
                          pinning=ctx.pinning, cores=ctx.pinning.server)
    url = f"http://127.0.0.1:{port}"
    with managed(proc):
        proc.wait_http_ok(f"{url}/health/liveliness", timeout=180)
        yield Server("litellm", [Target("litellm", f"{url}/v1/chat/completions",
                                        {"Authorization": f"Bearer {master_key}"})], proc)


# --------------------------------------------------------------------------------------------------
# The gateway: database, seed data, `alumia serve`


def run_cli(env: dict[str, str], *args: str) -> str:
    """Run `alumia <args>` with `env` and return its stdout; raise with its stderr when it fails."""
    done = subprocess.run([ALUMIA, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"`alumia {' '.join(args)}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


async def _pg_admin(sql: str) -> None:
    import asyncpg  # only needed with PostgreSQL

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_unavailable() -> str | None:
    """None when PostgreSQL answers at PG_ADMIN_DSN, else why not."""
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except Exception as exc:  # any failure means: run without it, and say why
        return f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {type(exc).__name__}: {exc}"
    return None


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database alumia_bench_<hex>, dropped (connections ended) on the way out."""
    name = "alumia_bench_" + secrets.token_hex(6)
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL_TEMPLATE.format(name=name)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def gateway_env(ctx: Context, data_dir: Path, db_url: str) -> dict[str, str]:
    """The gateway's settings: the fast upstream as openai, a fresh data dir and database, this tree."""
    return {**ctx.base_env, "PYTHONPATH": str(ctx.args.tree.resolve()), "ALUMIA_DATA_DIR": str(data_dir),
            "ALUMIA_DATABASE_URL": db_url, "ALUMIA_LOG_LEVEL": "WARNING",
            f"ALUMIA_BASE_URL_{PROVIDER.upper()}": ctx.upstream_url,
            f"ALUMIA_PLATFORM_KEY_{PROVIDER.upper()}": ctx.upstream_key}


def create_org(env: dict[str, str], slug: str, deposit_cents: int) -> str:
    """Create an org (and its owner) with the CLI, optionally deposit, and return an API key for it."""
    run_cli(env, "org", "create", "--slug", slug, "--owner-email", f"o@{slug}.test", "--json")
    if deposit_cents:
        run_cli(env, "billing", "deposit", "--org", slug, "--cents", str(deposit_cents), "--json")
    return json.loads(run_cli(env, "apikey", "create", "--org", slug, "--json"))["key"]


def add_byok_key(gateway_url: str, alm_key: str) -> None:
    """Give the key's org a BYOK key for the provider through the management API."""
    response = httpx.post(f"{gateway_url}/api/v1/billing/byok-keys", timeout=30,
                          headers={"Authorization": f"Bearer {alm_key}"},
                          json={"provider": PROVIDER, "apiKey": "sk-test-byok-" + secrets.token_hex(8)})
    if response.status_code != 201:
        raise BenchError(f"adding the BYOK key failed: HTTP {response.status_code} {response.text[:300]}")


@contextmanager
def gateway_server(ctx: Context, backend: str, workers: int = 1, cores: frozenset[int] | None = None,
                   suffix: str = "") -> Iterator[Server]:
    """`alumia serve` on a fresh database (`backend` sqlite or pg), seeded with the CLI and the API."""
    with ExitStack() as stack:
        data_dir = Path(tempfile.mkdtemp(prefix=f"alumia-{backend}-", dir=ctx.tmp))
        db_url = (stack.enter_context(postgres_database()) if backend == "pg"
                  else f"sqlite+aiosqlite:///{data_dir / 'alumia.db'}")
        env = gateway_env(ctx, data_dir, db_url)
        run_cli(env, "db", "upgrade")
        keys = {"platform": create_org(env, ORGS["platform"], deposit_cents=500_000),
                "byok": create_org(env, ORGS["byok"], deposit_cents=0)}
        port = free_port()
        proc = stack.enter_context(managed(ManagedProcess(
            f"gateway ({backend}, {workers} worker{'s' if workers > 1 else ''})",
            [ALUMIA, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)], env,
            ctx.log_path(f"gateway-{backend}"), pinning=ctx.pinning,
            cores=ctx.pinning.server if cores is None else cores)))
        url = f"http://127.0.0.1:{port}"
        proc.wait_http_ok(f"{url}/healthz")
        add_byok_key(url, keys["byok"])
        targets = [Target(f"{backend}-{route}{suffix}", f"{url}/v1/chat/completions",
                          {"Authorization": f"Bearer {key}"}, expected_route=route)
                   for route, key in keys.items()]
        yield Server(f"{backend}{suffix}", targets, proc, db_url,
                     {t.name: ORGS[t.expected_route or ""] for t in targets})


# --------------------------------------------------------------------------------------------------
# Measuring one server


@dataclass
class ServerRun:
    """What one server's run produced: its phase results and, for a gateway, the database checks."""

    results: list[PhaseResult]
    checks: list[Check]


async def measure(ctx: Context, server: Server, specs: list[PhaseSpec]) -> list[PhaseResult]:
    """Every phase for every target of `server`; within a phase its targets run back to back."""
    watched = Watched(ctx.upstream_pid, server.process.pid if server.process else None, server.db_name)
    results = []
    for spec in specs:
        for target in server.targets:
            profiled = ctx.args.py_spy == f"{target.name}:{spec.name}" and watched.server_pid is not None
            with profiling(watched.server_pid if profiled else None, ctx.args.py_spy_out):
                result = await run_phase(target, spec, watched, ctx.args.phase_timeout)
            say(f"    {spec.name:<11}{target.name:<22}{result.calls_per_s:9.1f} calls/s  "
                f"p50 {result.p50_ms:7.2f} ms  errors {result.errors}")
            results.append(result)
    return results


@contextmanager
def profiling(pid: int | None, out: Path) -> Iterator[None]:
    """py-spy recording `pid` (every thread, without pausing it) while inside; nothing when pid is None.

    The warm-up is recorded too (run_phase does both); keep the measured phase long with --calls.
    """
    if pid is None:
        yield
        return
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("--py-spy needs py-spy (make bench installs it)")
    out = out.with_name(f"{out.stem}-{int(time.time())}{out.suffix}")
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking",
                             "--threads", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        proc.wait(timeout=30)
        say(f"    profile written to {out}")


def expected_records(server: Server, results: list[PhaseResult]) -> dict[str, int]:
    """Org slug -> the successful calls made with its key: the usage records its database must hold."""
    return {slug: sum(r.succeeded for r in results if r.target == name)
            for name, slug in server.org_of.items()}


def settle_and_check(server: Server, results: list[PhaseResult]) -> list[Check]:
    """Wait for a gateway's metering to settle, stop the gateway, then check what it left behind."""
    assert server.db_url is not None and server.process is not None
    expected = expected_records(server, results)
    waited = asyncio.run(wait_settled(server.db_url, expected))
    server.process.stop()
    checks = check_states(asyncio.run(org_states(server.db_url)), expected)
    verdict = "ok" if all(c.ok for c in checks) else "FAILED"
    say(f"    database settled after {waited:.1f} s; checks: {verdict}")
    return checks


def run_server(ctx: Context, start: Callable[[], AbstractContextManager[Server]],
               specs: list[PhaseSpec]) -> ServerRun:
    """Start a server, measure it, let a gateway's metering settle, stop it, check its database."""
    with start() as server:
        cores = allowed_cores(server.process.pid) if server.process else "-"
        say(f"  {server.name} (cores {cores}) ...")
        if server.process:
            wait_rss_settled(server.process.pid)
        results = asyncio.run(measure(ctx, server, specs))
        checks = settle_and_check(server, results) if server.db_url is not None else []
    return ServerRun(results, checks)


def servers_of_repetition(ctx: Context) -> list[tuple[str, Callable[[], AbstractContextManager[Server]]]]:
    """(name, starter) of every server a repetition measures, in order."""
    servers: list[tuple[str, Callable[[], AbstractContextManager[Server]]]] = [
        ("direct", lambda: direct_server(ctx))]
    if not ctx.args.no_passthrough:
        servers.append(("passthrough", lambda: passthrough_server(ctx)))
    servers.append(("sqlite", lambda: gateway_server(ctx, "sqlite")))
    if ctx.postgres_skipped is None:
        servers.append(("pg", lambda: gateway_server(ctx, "pg")))
    if ctx.litellm is not None and ctx.litellm.executable is not None:
        servers.append(("litellm", lambda: litellm_server(ctx)))
    return servers


def run_repetition(ctx: Context, rep: int, specs: list[PhaseSpec]) -> tuple[list[RepResult], list[RepCheck]]:
    """Every server, one after the other; a LiteLLM that does not start is skipped with a note."""
    results: list[RepResult] = []
    checks: list[RepCheck] = []
    for name, start in servers_of_repetition(ctx):
        try:
            run = run_server(ctx, start, specs)
        except BenchError as exc:
            if name != "litellm":
                raise
            ctx.notes.append(f"LiteLLM skipped in repetition {rep}: it did not start: {exc}")
            say(f"  {ctx.notes[-1]}")
            continue
        results += [RepResult(rep, r) for r in run.results]
        checks += [RepCheck(rep, name, c) for c in run.checks]
    return results, checks


def run_workers_compare(ctx: Context, specs: list[PhaseSpec]) -> tuple[list[RepResult], list[RepCheck]]:
    """The gateway's non-streaming high-concurrency phase with `--workers 2`, on each database."""
    spec = next(s for s in specs if s.name == "c32")
    both = (ctx.pinning.server | ctx.pinning.client
            if ctx.pinning.server is not None and ctx.pinning.client is not None else None)
    results: list[RepResult] = []
    checks: list[RepCheck] = []
    for backend in ["sqlite"] + (["pg"] if ctx.postgres_skipped is None else []):
        run = run_server(ctx, lambda b=backend: gateway_server(ctx, b, workers=2, cores=both, suffix="-w2"),
                         [spec])
        results += [RepResult(0, r) for r in run.results]
        checks += [RepCheck(0, f"{backend}-w2", c) for c in run.checks]
    return results, checks


# --------------------------------------------------------------------------------------------------
# Report


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def tree_description(ctx: Context) -> str:
    """Which alumia the gateway imports (checked through the gateway's own environment) and its commit."""
    env = gateway_env(ctx, ctx.tmp, "")
    code = "import alumia; print(alumia.__file__)"
    imported = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=60, check=False).stdout.strip()
    git = ["git", "-C", str(ctx.args.tree)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True,
                           check=False).stdout.strip()
    return f"{imported or '?'} (commit {commit or '?'}{', with uncommitted changes' if dirty else ''})"


def header_lines(ctx: Context, busy_before: float, started: datetime, argv: list[str]) -> list[str]:
    """What was measured, where, with what."""
    litellm = ctx.litellm
    litellm_line = ("not measured (--no-litellm)" if litellm is None else
                    f"SKIPPED: {litellm.note}" if litellm.executable is None else
                    f"{litellm.note}; its environment: {_litellm.package_versions()}")
    return [
        f"Gateway overhead — POST /v1/chat/completions, model {MODEL}, upstream: bench/fast_upstream.py",
        f"date {started:%Y-%m-%d %H:%M} UTC; command: {shlex.join(argv)}",
        f"machine: nproc {os.cpu_count()}, {cpu_model()}, Python {platform.python_version()}, "
        f"busy before start {busy_before:.0f}% (all cores)",
        f"gateway environment: aiohttp {_package_version('aiohttp')}, uvicorn {_package_version('uvicorn')}, "
        f"uvloop {_package_version('uvloop')}, SQLAlchemy {_package_version('SQLAlchemy')}",
        f"alumia: {tree_description(ctx)}",
        f"LiteLLM: {litellm_line}",
        "PostgreSQL: " + (ctx.postgres_skipped or "fresh database per gateway run on 127.0.0.1:5432 "
                          "(dropped at the end)"),
        f"cores: {ctx.pinning.note}",
        "",
    ]


def _rows_by_rep(results: list[RepResult], db_targets: set[str],
                 targets: list[str]) -> dict[int, dict[str, dict[str, Row]]]:
    """rep -> phase -> target -> row."""
    out: dict[int, dict[str, dict[str, Row]]] = {}
    for rep in sorted({r.rep for r in results}):
        mine = [r.result for r in results if r.rep == rep]
        phases = dict.fromkeys(r.phase for r in mine)
        out[rep] = {phase: rows_of_phase([r for r in mine if r.phase == phase], targets, db_targets)
                    for phase in phases}
    return out


def render(ctx: Context, specs: list[PhaseSpec], results: list[RepResult], compare: list[RepResult],
           checks: list[RepCheck], head: list[str], busy_before: float) -> str:
    """The whole report."""
    targets = list(dict.fromkeys(r.result.target for r in results))
    db_targets = {t for t in targets if t.startswith("pg-")}
    gateways = [t for t in targets if t.startswith(("sqlite-", "pg-"))]
    per_rep = _rows_by_rep(results, db_targets, targets)
    lines = [*head]
    for rep, phases in per_rep.items():
        lines += render_phase_tables(f"Repetition {rep} of {len(per_rep)}", specs, phases)
    medians = {spec.name: median_rows([phases[spec.name] for phases in per_rep.values()
                                       if spec.name in phases]) for spec in specs}
    if len(per_rep) > 1:
        lines += render_phase_tables(f"MEDIAN over {len(per_rep)} repetitions of each figure", specs, medians)
    lines += ["  " + line for line in LEGEND] + [""]
    lines += versus_litellm(list(per_rep.values()), specs, gateways)
    if compare:
        two = rows_of_phase([r.result for r in compare], [r.result.target for r in compare],
                            {r.result.target for r in compare if r.result.target.startswith("pg-")})
        pairs = [(g, g + "-w2") for g in gateways]
        lines += workers_table(medians.get("c32", {}), two, pairs,
                               "both cores, shared with the load generator and the upstream"
                               if ctx.pinning.server is not None else "not pinned")
    lines += render_checks(checks)
    everything = results + compare
    lines += ctx.notes + noise_lines(busy_before, everything)
    lines += partial_lines(everything) + error_lines(everything)
    return "\n".join(lines).rstrip() + "\n"


def write_results(report: str, started: datetime) -> None:
    """Append the report to bench/results.md (created with a short preface if missing)."""
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text("# bench/gateway_overhead.py results\n\nEach section is one run of "
                              "`bench/gateway_overhead.py --write-results`; how to read it: "
                              "bench/README.md.\n")
    with RESULTS_MD.open("a") as out:
        out.write(f"\n## Run of {started:%Y-%m-%d %H:%M} UTC\n\n```\n{report}```\n")


def write_json(path: Path, results: list[RepResult], compare: list[RepResult],
               checks: list[RepCheck]) -> None:
    """Every phase result and check as JSON."""
    data: dict[str, Any] = {"phases": [{"rep": r.rep, **asdict(r.result)} for r in results],
                            "workers2": [asdict(r.result) for r in compare],
                            "checks": [{"rep": c.rep, "server": c.server, **asdict(c.check)} for c in checks]}
    path.write_text(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------------------------------------
# Main


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def prepare(ctx: Context) -> None:
    """LiteLLM (installed if needed) and PostgreSQL: each is either ready or skipped with a reason."""
    if not ctx.args.no_litellm:
        ctx.litellm = _litellm.ensure_installed()
        if ctx.litellm.executable is None:
            ctx.notes.append(f"LiteLLM SKIPPED: {ctx.litellm.note}")
            say(ctx.notes[-1])
    if ctx.args.no_postgres:
        ctx.postgres_skipped = "not measured (--no-postgres)"
    elif reason := postgres_unavailable():
        ctx.postgres_skipped = f"SKIPPED: {reason}"
        ctx.notes.append(f"PostgreSQL {ctx.postgres_skipped}")
        say(ctx.notes[-1])


WORKERS_COMPARE_S = 120.0  # about what the --workers 2 comparison took on the shared two-core machine


class Budget:
    """The run's time limit: a step starts only if it will likely end within it."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s, self.started = limit_s, time.monotonic()

    def elapsed_s(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started


    def allows(self, estimate_s: float, what: str, notes: list[str]) -> bool:
        """Whether `what`, estimated to take `estimate_s`, fits; if not, say so in `notes`."""
        if self.elapsed_s() + estimate_s <= self.limit_s:
            return True
        notes.append(f"NOTE: skipped {what}: {self.elapsed_s() / 60:.1f} min used, it would take about "
                     f"{estimate_s / 60:.1f} more and --max-minutes is {self.limit_s / 60:.0f}")
        say(notes[-1])
        return False


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Set up, run every repetition, report; the exit status."""
    pinning = plan_pinning(not args.no_pin)
    pin_self(pinning)
    busy_before = machine_busy_pct()
    started = datetime.now(UTC)
    specs = phase_specs(args)
    with tempfile.TemporaryDirectory(prefix="alumia-bench-") as tmp, ExitStack() as stack:
        ctx = Context(args, pinning, Path(tmp), clean_environ())
        prepare(ctx)
        start_upstream(ctx, stack)
        head = header_lines(ctx, busy_before, started, [Path(sys.argv[0]).name, *argv])
        print("\n".join(head), file=sys.stderr, flush=True)
        budget = Budget(args.max_minutes * 60)
        results: list[RepResult] = []
        checks: list[RepCheck] = []
        durations: list[float] = []  # of the repetitions so far: the next one likely takes as long
        for rep in range(1, args.repeat + 1):
            if durations and not budget.allows(max(durations), f"repetition {rep}", ctx.notes):
                break
            say(f"repetition {rep} of {args.repeat}")
            rep_started = time.monotonic()
            more, more_checks = run_repetition(ctx, rep, specs)
            results, checks = results + more, checks + more_checks
            durations.append(time.monotonic() - rep_started)
        compare: list[RepResult] = []
        if args.workers_compare and budget.allows(WORKERS_COMPARE_S, "the --workers 2 comparison", ctx.notes):
            say("--workers 2")
            compare, more_checks = run_workers_compare(ctx, specs)
            checks += more_checks
        report = render(ctx, specs, results, compare, checks, head, busy_before)
    print(report, end="")
    if args.write_results:
        write_results(report, started)
        say(f"appended to {RESULTS_MD}")
    if args.json:
        write_json(args.json, results, compare, checks)
    failed = [c for c in checks if not c.check.ok]
    errors = sum(r.result.errors for r in results + compare)
    if failed or errors:
        say(f"FAILED: {errors} failed calls, {len(failed)} failed database checks")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 all good, 1 failed calls or checks, 2 could not run, 130 interrupted."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args, argv)
    except BenchError as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("\ninterrupted; every process and temporary file was cleaned up")
        return 130


if __name__ == "__main__":
    sys.exit(main())

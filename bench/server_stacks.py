"""Which HTTP server to run the gateway on: the same bare pass-through under each, side by side.

`bench/asgi_passthrough.py` (a bare ASGI app: read the body, forward it with aiohttp's client, relay
the answer) runs under uvicorn (uvloop + httptools, as `alumia serve` runs today) and under granian
(Rust HTTP, uvloop); `bench/passthrough_proxy.py` is the same work on aiohttp's own server. Each
server is pinned to core 0, the load generator and bench/fast_upstream.py to core 1, as in
gateway_overhead.py, and gets non-streaming and streaming calls at concurrency 32 after a warm-up.
Reported per row: calls/s and the server's CPU ms per call (medians over --repeat runs).

    .venv/bin/python bench/server_stacks.py [--repeat 3] [--calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from _load import PhaseSpec, Target, run_phase
from _procs import ManagedProcess, Watched, free_port, listening_socket, managed, pin_self, plan_pinning

BENCH = Path(__file__).resolve().parent


@contextmanager
def started(name: str, argv: list[str], env: dict[str, str], tmp: Path, cores: frozenset[int] | None,
            pinning: object, health: str, fds: tuple[int, ...] = ()) -> Iterator[ManagedProcess]:
    """A server process, waited for until `health` answers 200, stopped on the way out."""
    proc = ManagedProcess(name, argv, env, tmp / f"{name}.log", pinning=pinning,  # type: ignore[arg-type]
                          cores=cores, pass_fds=fds)
    with managed(proc):
        proc.wait_http_ok(health)
        yield proc


def main() -> None:
    """Run every stack --repeat times and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per phase")
    args = parser.parse_args()
    pinning = plan_pinning(True)
    pin_self(pinning)
    tmp = Path(tempfile.mkdtemp(prefix="stacks-"))
    env = {**os.environ, "PYTHONPATH": str(BENCH)}
    key = "sk-test-" + secrets.token_hex(8)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        with ExitStack() as stack:
            sock = listening_socket()
            upstream_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            with sock:
                upstream = stack.enter_context(started(
                    "upstream", [sys.executable, str(BENCH / "fast_upstream.py"), "--fd", str(sock.fileno())],
                    env, tmp, pinning.client, pinning, f"{upstream_url}/models", (sock.fileno(),)))
            env = {**env, "BENCH_UPSTREAM": upstream_url, "BENCH_KEY": key}
            for _ in range(args.repeat):
                for stack_name in ("aiohttp", "uvicorn", "granian"):
                    with server(stack_name, env, tmp, pinning, upstream_url, key) as (proc, url):
                        target = Target(stack_name, f"{url}/v1/chat/completions",
                                        {"Authorization": "Bearer client-key-ignored"})
                        for stream in (False, True):
                            spec = PhaseSpec("stream-c32" if stream else "c32", stream, 32, args.calls, 200)
                            result = asyncio.run(run_phase(target, spec, Watched(upstream.pid, proc.pid), 60))
                            assert result.errors == 0, result.error_samples
                            results.setdefault((stack_name, spec.name), []).append(
                                (result.calls_per_s, result.cpu.server_ms))
                            print(f"{stack_name:8} {spec.name:10} {result.calls_per_s:8.0f} calls/s "
                                  f"{result.cpu.server_ms:6.3f} ms CPU/call", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Server stacks, bare pass-through, concurrency 32, {args.calls} calls per phase, "
          f"median of {args.repeat}")
    print("| server | phase | calls/s | server CPU ms/call |")
    print("|---|---|---|---|")
    for (stack_name, phase), runs in results.items():
        print(f"| {stack_name} | {phase} | {statistics.median(r[0] for r in runs):,.0f} | "
              f"{statistics.median(r[1] for r in runs):.3f} |")


@contextmanager
def server(name: str, env: dict[str, str], tmp: Path, pinning: object, upstream: str,
           key: str) -> Iterator[tuple[ManagedProcess, str]]:
    """One stack serving the pass-through, on the server core."""
    cores = pinning.server  # type: ignore[attr-defined]
    if name == "aiohttp":
        sock = listening_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        argv = [sys.executable, str(BENCH / "passthrough_proxy.py"), "--fd", str(sock.fileno()),
                "--upstream", upstream, "--key", key]
        with sock, started(name, argv, env, tmp, cores, pinning, f"{url}/healthz", (sock.fileno(),)) as proc:
            yield proc, url
        return
    if name == "uvicorn":
        # Not --fd: uvicorn takes an inherited descriptor for a UNIX socket and leaves Nagle on, which
        # costs ~40 ms per answer here. It binds a port chosen just before, as `alumia serve` does.
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "uvicorn", "asgi_passthrough:app", "--host", "127.0.0.1", "--port",
                str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level",
                "warning"]
        with started(name, argv, env, tmp, cores, pinning, f"{url}/healthz") as proc:
            yield proc, url
        return
    # granian binds its own port: chosen just before, as for LiteLLM in gateway_overhead.py.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--loop", "uvloop",
            "--workers", "1", "--runtime-threads", "1", "--host", "127.0.0.1", "--port", str(port),
            "--no-ws", "--log-level", "warning", "asgi_passthrough:app"]
    with started(name, argv, env, tmp, cores, pinning, f"{url}/healthz") as proc:
        yield proc, url


if __name__ == "__main__":
    main()

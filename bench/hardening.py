"""Issue 9's availability figures, before and after: what one hostile client costs everyone else.

Starts the simulator, a hostile upstream of its own and `alumia serve` on a fresh SQLite file, then,
one at a time, measuring the server's memory (VmRSS) and the latency of an ordinary gateway call made
by another org meanwhile:

1. `body`: a 256 MiB body with no API key (sent as fast as the socket takes it), and one sent a byte
   every 0.5 s: how much the server buffered and when it answered.
2. `logins`: six concurrent loops of wrong-password sign-ins for 8 s (throttling off in both trees).
3. `stream`: a platform stream whose body holds 270,000 one-letter messages (time to its end).
4. `upstream`: a provider answering a 500 with a 200 MB body.

    .venv/bin/python bench/hardening.py [--tree PATH]   # PATH: another checkout's src, for "before"

Numbers are comparable only within one run on one machine (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
from aiohttp import web

ALUMIA = str(Path(sys.executable).with_name("alumia"))
HUGE_BODY = 256 * 1024 * 1024
HUGE_ERROR = 200 * 1024 * 1024


def rss_mib(pid: int) -> float:
    """The process's resident memory, MiB."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def _hostile_upstream() -> tuple[int, threading.Thread]:
    """An OpenAI-shaped provider that answers every call with a 500 and a 200 MB body."""
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=500, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b"x" * (1024 * 1024)
        try:
            await response.write(b'{"error": {"message": "')
            for _ in range(HUGE_ERROR // len(chunk)):
                await response.write(chunk)
        except (ConnectionError, RuntimeError):  # the gateway stopped reading: as it should
            pass
        return response

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def serve() -> None:
        app = web.Application()
        app.router.add_post("/openai/v1/chat/completions", huge)
        web.run_app(app, sock=sock, print=None, handle_signals=False)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


class Gateway:
    """`alumia serve` on a fresh SQLite file, with one paying org."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        with socket.socket() as sock:  # a benchmark, not a test: a collision just fails the run
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "ALUMIA_DATA_DIR": str(data_dir), "ALUMIA_LOG_LEVEL": "WARNING"}
        subprocess.run([ALUMIA, "db", "upgrade"], env=self.env, check=True, capture_output=True)
        self.process = subprocess.Popen([ALUMIA, "serve", "--port", str(self.port)], env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        self.key, self.login = self._org("bench-" + os.urandom(3).hex())

    def _org(self, slug: str) -> tuple[str, dict[str, str]]:
        made = subprocess.run([ALUMIA, "org", "create", "--slug", slug, "--owner-email", f"o@{slug}.test",
                               "--json"], env=self.env, check=True, capture_output=True, text=True)
        password = orjson.loads(made.stdout)["password"]
        key = subprocess.run([ALUMIA, "apikey", "create", "--org", slug, "--json"], env=self.env,
                             check=True, capture_output=True, text=True)
        subprocess.run([ALUMIA, "billing", "deposit", "--org", slug, "--cents", "5000"], env=self.env,
                       check=True, capture_output=True)
        return orjson.loads(key.stdout)["key"], {"email": f"o@{slug}.test", "password": password}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


async def _calls(gw: Gateway, seconds: float) -> list[float]:
    """Latencies (ms) of ordinary calls, one at a time, for about `seconds`."""
    body = orjson.dumps({"model": "gpt-5.6-luna", "messages": [{"role": "user", "content": "hi"}]})
    latencies = []
    async with httpx.AsyncClient(base_url=gw.url, timeout=60,
                                 headers={"Authorization": f"Bearer {gw.key}"}) as api:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            await api.post("/v1/chat/completions", content=body)
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def _summary(latencies: list[float]) -> str:
    if len(latencies) < 20:  # too few for percentiles: each one
        return f"{len(latencies)} call(s): " + ", ".join(f"{ms:.0f} ms" for ms in latencies)
    q = statistics.quantiles(latencies, n=20)
    return f"p50 {statistics.median(latencies):.1f} ms, p95 {q[18]:.1f} ms, max {max(latencies):.1f} ms " \
           f"({len(latencies)} calls)"


async def _huge_body(gw: Gateway) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % HUGE_BODY)
    chunk = b" " * (1024 * 1024)
    sent, started, answered = 0, time.perf_counter(), b""
    before = rss_mib(gw.process.pid)
    peak = before
    try:
        while sent < HUGE_BODY:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            peak = max(peak, rss_mib(gw.process.pid))
            if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]  # answered early
                break
        answered = await asyncio.wait_for(reader.read(200), 30)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    status = answered.split(b"\r\n", 1)[0].decode(errors="replace")
    return (f"256 MiB body, no key: answered {status!r} after {sent // 2**20} MiB sent in "
            f"{time.perf_counter() - started:.2f} s; server RSS {before:.0f} -> peak {peak:.0f} MiB")


async def _slow_body(gw: Gateway, limit_s: float = 40) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + gw.key.encode() + b"\r\nContent-Length: 1000\r\n\r\n")
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < limit_s:
            writer.write(b" ")
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(200), 0.5)
            except TimeoutError:
                continue
            status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
            waited = time.perf_counter() - started
            return f"a body sent 1 byte / 0.5 s: answered {status!r} after {waited:.1f} s"
    except ConnectionError:
        return f"a body sent 1 byte / 0.5 s: connection closed after {time.perf_counter() - started:.1f} s"
    finally:
        writer.close()
    return f"a body sent 1 byte / 0.5 s: still open after {limit_s:.0f} s"


async def _logins(gw: Gateway) -> str:
    stop = time.perf_counter() + 8

    async def loop() -> int:
        n = 0
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as web_client:
            page = (await web_client.get("/login")).text  # each page sets a fresh CSRF cookie
            while time.perf_counter() < stop:
                token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
                answer = await web_client.post("/login", headers={"Origin": gw.url}, data={
                    "email": gw.login["email"], "password": "wrong", "csrf_token": token})
                assert answer.status_code == 401, answer.status_code  # each one checked
                page = answer.text
                n += 1
        return n

    idle = await _calls(gw, 2)
    results = await asyncio.gather(_calls(gw, 8), *(loop() for _ in range(6)))
    return f"gateway calls idle: {_summary(idle)}\n    during 6 bad-login loops ({sum(results[1:])} " \
           f"attempts): {_summary(results[0])}"


async def _big_stream(gw: Gateway) -> str:
    # The simulator echoes the last message word by word: 100 words make about 100 frames.
    last = {"role": "user", "content": " ".join(f"w{n}" for n in range(100))}
    messages = [*[{"role": "user", "content": "a"}] * 270_000, last]
    body = orjson.dumps({"model": "gpt-5.6-luna", "messages": messages, "stream": True})
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=gw.url, timeout=120,
                                 headers={"Authorization": f"Bearer {gw.key}"}) as api:
        during = asyncio.create_task(_calls(gw, 3))
        async with api.stream("POST", "/v1/chat/completions", content=body) as response:
            frames = len([line async for line in response.aiter_lines() if line.startswith("data:")])
        elapsed = time.perf_counter() - started
        others = await during
    return (f"stream with 270,000 messages ({len(body) / 2**20:.1f} MiB): HTTP {response.status_code}, "
            f"{frames} frames in {elapsed:.2f} s\n    other calls meanwhile: {_summary(others)}")


async def _upstream_error(gw: Gateway) -> str:
    before = rss_mib(gw.process.pid)
    started = time.perf_counter()
    body = orjson.dumps({"model": "gpt-5.6-luna", "messages": [{"role": "user", "content": "hi"}]})
    async with httpx.AsyncClient(base_url=gw.url, timeout=120,
                                 headers={"Authorization": f"Bearer {gw.key}"}) as api:
        response = await api.post("/v1/chat/completions", content=body)
    after = rss_mib(gw.process.pid)
    return (f"provider 500 with a 200 MB body: HTTP {response.status_code} after "
            f"{time.perf_counter() - started:.2f} s; server RSS {before:.0f} -> {after:.0f} MiB")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", help="the src/ of another checkout to measure (e.g. main before a change)")
    args = parser.parse_args()
    from alumia.sim.env import sim_env
    from alumia.sim.server import SimServer

    extra = {"PYTHONPATH": args.tree} if args.tree else {}
    # Generous limits for the one big-stream case, so that it measures the relay, not the 422 in front;
    # no sign-in throttling, so that both trees check every password of the flood.
    extra |= {"ALUMIA_MAX_MESSAGES": "300000", "ALUMIA_MAX_CONTENT_PARTS": "300000",
              "ALUMIA_BODY_READ_TIMEOUT_SECONDS": "10",
              **{f"ALUMIA_SIGNIN_{kind}_{what}_FAILURES": str(10**6 + (what == "LOCK"))
                 for kind in ("ACCOUNT", "ADDRESS") for what in ("FREE", "LOCK")}}
    with SimServer() as sim, tempfile.TemporaryDirectory() as tmp:
        env = {**sim_env(sim.host, sim.port), **extra}
        gw = Gateway(env, Path(tmp) / "a")
        try:
            print("1.", await _huge_body(gw))
            print("  ", await _slow_body(gw))
            print("2.", await _logins(gw))
            print("3.", await _big_stream(gw))
        finally:
            gw.stop()
        port, _thread = _hostile_upstream()
        hostile = Gateway({**env, "ALUMIA_BASE_URL_OPENAI": f"http://127.0.0.1:{port}/openai/v1"},
                          Path(tmp) / "b")
        try:
            print("4.", await _upstream_error(hostile))
        finally:
            hostile.stop()


if __name__ == "__main__":
    asyncio.run(main())

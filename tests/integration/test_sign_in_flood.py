"""A flood of wrong-password sign-ins does not stall other tenants' gateway calls.

Password checks cost ~150-200 ms of argon2 each; run on the event loop, six parallel wrong-password
loops took other tenants' model calls from 11 ms to seconds. The throttle is set out of the way here so
that every attempt in the flood runs a real argon2 check: this test is about where that check runs.
"""

import asyncio
import secrets
import statistics
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from alumia.sim.env import sim_env
from alumia.sim.server import SimServer

from harness import Server, new_org_with_login, running_server
from login_form import form_client, submit_login

FLOOD_LOOPS = 6
FLOOD_SECONDS = 2.5
# Every sign-in attempt in the flood reaches argon2: no back-off, no lock.
NO_THROTTLE = {f"ALUMIA_SIGNIN_{kind}_{name}_FAILURES": count for kind in ("ACCOUNT", "ADDRESS")
               for name, count in (("FREE", "1000000"), ("LOCK", "2000000"))}


@pytest.fixture(scope="module")
async def flood_server(sim: SimServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A server of this module's own (the flood must not throttle other modules' sign-ins)."""
    data_dir = tmp_path_factory.mktemp("alumia-flood")
    async with running_server("sqlite", data_dir, {**sim_env(sim.host, sim.port), **NO_THROTTLE},
                              "flood") as srv:
        yield srv


async def _timed_calls(api: httpx.AsyncClient, seconds: float) -> list[float]:
    """Milliseconds of each platform-routed chat completion made one after another for `seconds`."""
    latencies: list[float] = []
    body = {"model": "gpt-5.6-luna", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(latencies) < 5:
        start = time.perf_counter()
        response = await api.post("/v1/chat/completions", json=body)
        latencies.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200 and response.headers["x-alumia-route"] == "platform", response.text
    return latencies


async def _wrong_passwords(base_url: str, email: str, stop: asyncio.Event) -> int:
    """Wrong passwords for `email` until told to stop; how many were refused with 401."""
    refused = 0
    async with form_client(base_url) as client:
        while not stop.is_set():
            response = await submit_login(client, email, "wrong-" + secrets.token_hex(4))
            assert response.status_code == 401, response.text
            refused += 1
    return refused


def _summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"n={len(ordered)} median={statistics.median(ordered):.1f} ms p95={p95:.1f} ms"


async def test_a_flood_of_wrong_passwords_does_not_stall_gateway_calls(flood_server: Server) -> None:
    org, _password = await new_org_with_login(flood_server)
    async with flood_server.api(org.key) as api:
        await _timed_calls(api, 0.3)  # warm the connection and the caches
        quiet = await _timed_calls(api, 1.5)
        stop = asyncio.Event()
        # Half the loops hit a real account, half unknown emails (the dummy-hash path).
        emails = [org.owner_email if i % 2 == 0 else f"nobody-{i}@{org.slug}.test"
                  for i in range(FLOOD_LOOPS)]
        loops = [asyncio.create_task(_wrong_passwords(flood_server.base_url, e, stop)) for e in emails]
        await asyncio.sleep(0.3)  # let every loop have a check in flight
        flooded = await _timed_calls(api, FLOOD_SECONDS)
        stop.set()
        refused = await asyncio.gather(*loops)
    print(f"\nquiet:   {_summary(quiet)}\nflooded: {_summary(flooded)}\n"
          f"wrong passwords refused: {sum(refused)}")
    # Real checks ran during the flood (at most two at once, at a low CPU priority: few on a busy machine).
    assert sum(refused) >= 2
    # On the event loop each call waited behind whole argon2 checks (seconds); off it, a few ms.
    assert statistics.median(flooded) < 100, _summary(flooded)

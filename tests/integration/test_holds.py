"""Holds: a platform call reserves its worst case first, so concurrent calls cannot overspend.

The concurrency test runs two server processes on one database and keeps every admitted call in
flight (the simulator holds each answer, `[[sim:hold]]`, until every call has arrived) while all 200 are
attempted: exactly the number of reservations the balance covers are admitted, the rest get 402 before
reaching the simulator, and once the simulator lets the admitted calls go the balance ends at the start
minus the sum of the recorded charges, with no hold left open.
"""

import asyncio
import time
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import orjson
from sqlalchemy import func, select

from alumia.clock import utcnow
from alumia.services.sweeper import expire_stale
from alumia.sim.env import sim_env
from alumia.sim.server import SimServer
from alumia.storage import ledger
from alumia.storage.call_writes import Reserve
from alumia.storage.tables import holds, orgs, usage_records

from harness import Org, Server

CALLS = 200
MAX_TOKENS = 9_000
# How long every call may take to be refused or reach the simulator; well under the simulator's 60 s
# safety timeout for held calls.
ARRIVAL_SECONDS = 30


def body_bytes() -> bytes:
    return orjson.dumps({"model": "gpt-5.6-sol", "max_tokens": MAX_TOKENS,
                         "messages": [{"role": "user", "content": "hold this [[sim:hold]]"}]})


def expected_reservation(raw: bytes) -> int:
    # gpt-5.6-sol: dearest input price 6.25 (cache write), output 30, per MTok = microcents per token.
    exact = len(raw) * Decimal("6.25") + MAX_TOKENS * 30
    return int(exact.quantize(Decimal(1), ROUND_HALF_UP))


async def org_money(server: Server, org: Org) -> tuple[int, int, int, int]:
    async with server.db.read() as conn:
        balance, held = (await conn.execute(select(orgs.c.balance_microcents, orgs.c.held_microcents)
                                            .where(orgs.c.id == org.id))).one()
        still_open = (await conn.execute(select(func.count()).select_from(holds).where(
            holds.c.org_id == org.id, holds.c.status == "open"))).scalar_one()
        charged = (await conn.execute(select(func.coalesce(func.sum(usage_records.c.charged_microcents), 0))
                                      .where(usage_records.c.org_id == org.id))).scalar_one()
        assert await ledger.sum_entries(conn, org.id) == balance
    return int(balance), int(held), int(still_open), int(charged)


async def sim_held(control: httpx.AsyncClient, sim: SimServer) -> int:
    """How many calls the simulator is holding now."""
    return (await control.get(f"http://{sim.host}:{sim.port}/_sim/held")).json()["held"]


async def sim_received_since(control: httpx.AsyncClient, sim: SimServer, since: float) -> int:
    """How many calls the simulator received since the wall-clock time `since`.

    By time rather than by the log's length: the log is bounded and shared by the whole session.
    """
    calls = (await control.get(f"http://{sim.host}:{sim.port}/_sim/calls")).json()["calls"]
    return sum(call["time"] >= since for call in calls)


async def test_concurrent_calls_from_two_processes_never_overspend(server: Server, sim: SimServer) -> None:
    org = await server.new_org()  # $10.00 early-bird credit
    start = 10_000_000
    raw = body_bytes()
    per_call = expected_reservation(raw)
    covered = start // per_call
    assert 0 < covered < CALLS
    second = Server(database_url=server.env["ALUMIA_DATABASE_URL"],
                    data_dir=Path(server.env["ALUMIA_DATA_DIR"]), sim_env=sim_env(sim.host, sim.port),
                    label="second")
    second.start()
    sim_base = f"http://{sim.host}:{sim.port}"
    try:
        limits = httpx.Limits(max_connections=CALLS, max_keepalive_connections=CALLS)
        headers = {"Authorization": f"Bearer {org.key}", "Content-Type": "application/json"}
        # The control calls get their own client: every connection of the other is taken by a call.
        async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as client, \
                httpx.AsyncClient(timeout=5) as control:
            assert await sim_held(control, sim) == 0
            targets = [server.base_url, second.base_url]
            since = time.time()
            started = time.monotonic()
            calls = [asyncio.create_task(client.post(f"{targets[i % 2]}/v1/chat/completions", content=raw))
                     for i in range(CALLS)]
            try:
                # Every call has either been answered (a refusal) or is held at the simulator, and the
                # simulator holds every call it received: nothing is still on its way anywhere.
                deadline = time.monotonic() + ARRIVAL_SECONDS
                while True:
                    holding = await sim_held(control, sim)
                    answered = sum(call.done() for call in calls)
                    # The call log is read only then: it is large, and this loop must not slow the sim.
                    if answered + holding == CALLS:
                        received = await sim_received_since(control, sim, since)
                        if holding == received:
                            break
                    assert time.monotonic() < deadline, (
                        f"after {ARRIVAL_SECONDS} s: {answered} answered, {holding} held")
                    await asyncio.sleep(0.05)
                early = [call.result() for call in calls if call.done()]
                assert all(r.status_code == 402 for r in early), [r.status_code for r in early]
                assert (holding, received, len(early)) == (covered, covered, CALLS - covered)
            finally:
                # Also when an assertion failed, so no call waits out the simulator's safety timeout.
                released = (await control.post(f"{sim_base}/_sim/release")).json()["released"]
                responses = await asyncio.gather(*calls)
            elapsed = time.monotonic() - started
            assert released == covered
            received_in_all = await sim_received_since(control, sim, since)
            held_after = await sim_held(control, sim)
    finally:
        second.stop()
        await second.db.dispose()
    statuses = [r.status_code for r in responses]
    admitted, refused = statuses.count(200), statuses.count(402)
    balance, held, still_open, charged = await org_money(server, org)
    print(f"\nholds: {CALLS} calls, {admitted} admitted, {refused} refused (402), "
          f"{per_call} microcents reserved each, final balance {balance} microcents, {elapsed:.1f} s")
    assert (admitted, refused) == (covered, CALLS - covered)
    assert all(r.json()["error"]["code"] == "PAYMENT_REQUIRED" for r in responses if r.status_code == 402)
    assert (received_in_all, held_after) == (admitted, 0)  # refused calls never reached the provider
    assert (held, still_open) == (0, 0)
    assert balance == start - charged and charged > 0


async def test_every_way_a_call_ends_closes_its_hold_exactly_once(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        for text in ("fine", "rate limited [[sim:status=429]]", "broken [[sim:status=500]]"):
            await api.post("/v1/chat/completions", json={"model": "gpt-5.6-luna",
                                                         "messages": [{"role": "user", "content": text}]})
        cut = await api.post("/v1/chat/completions", json={
            "model": "gpt-5.6-luna", "stream": True,
            "messages": [{"role": "user", "content": "a b c d e f [[sim:cut_after=3]]"}]})
        assert cut.status_code == 200
    balance, held, still_open, charged = await org_money(server, org)
    assert (held, still_open) == (0, 0) and balance == 10_000_000 - charged
    async with server.db.read() as conn:
        rows = await conn.execute(select(holds.c.status).where(holds.c.org_id == org.id))
        statuses = sorted(r[0] for r in rows)
    assert statuses == ["released", "released", "settled", "settled"]


async def test_the_sweeper_expires_holds_left_by_a_dead_process_once(server: Server) -> None:
    org = await server.new_org()
    now = utcnow()
    for n in range(3):
        assert (await server.db.calls.reserve(Reserve(
            hold_id=f"req_dead_{org.id[:8]}_{n}", org_id=org.id, amount=1_000_000,
            now=now - timedelta(hours=1), expires_at=now - timedelta(minutes=1)))).admitted
    _, held, still_open, _ = await org_money(server, org)
    assert (held, still_open) == (3_000_000, 3)
    # The balance available to a new call is what the dead holds leave.
    async with server.api(org.key) as api:
        refused = await api.post("/v1/chat/completions", json={
            "model": "gpt-5.6-sol", "max_tokens": 250_000, "messages": [{"role": "user", "content": "x"}]})
        assert refused.status_code == 402
    # Two sweepers at once (as several processes would run them) free each hold once.
    freed = await asyncio.gather(expire_stale(server.db), expire_stale(server.db))
    assert sum(freed) == 3
    balance, held, still_open, _ = await org_money(server, org)
    assert (balance, held, still_open) == (10_000_000, 0, 0)


async def test_a_client_that_disconnects_mid_stream_is_metered_and_its_hold_closed(server: Server) -> None:
    org = await server.new_org()
    body = {"model": "gpt-5.6-luna", "stream": True,
            "messages": [{"role": "user", "content": " ".join(["word"] * 40) + " [[sim:delay_ms=50]]"}]}
    async with server.api(org.key) as api, api.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for _chunk in response.aiter_bytes():
            break  # hang up after the first bytes
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with server.db.read() as conn:
            query = select(usage_records).where(usage_records.c.org_id == org.id)
            record = (await conn.execute(query)).first()
        if record is not None or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert record is not None, "the disconnected call was never metered"
    assert record.status in ("client_disconnected", "ok")
    balance, held, still_open, charged = await org_money(server, org)
    assert (held, still_open) == (0, 0) and balance == 10_000_000 - charged

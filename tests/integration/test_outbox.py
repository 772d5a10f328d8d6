"""Crashes lose nothing (shared/security.md, property 16): the metering outbox, with real processes.

The crash: a real `alumia serve` (SQLite file or PostgreSQL) makes a platform call to the simulator;
while the call waits upstream the test takes a lock its metering transaction needs (SQLite: a writer
holding BEGIN IMMEDIATE; PostgreSQL: `SELECT ... FROM orgs WHERE id = :org FOR UPDATE`, which the
usage record's foreign key check and the balance update wait for). The provider answers, the server
journals the call and blocks in its transaction; the test waits until the journal line is on disk,
kills the server with SIGKILL, releases the lock and starts a new server on the same database and data
dir. Its start-up recovery must charge the call exactly once, settle its hold with that charge, leave
the balance exact, skip the call that had committed before the kill, and remove the dead process's
files. Also: two processes recovering at once charge once, a live process's journal is never touched
(not by a second server sweeping every 0.2 s, not by `recover` from this process), replaying one call
many times at once writes it once, and a call replayed after its hold expired is still charged, once.
"""

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import func, select, text

from alumia.clock import new_request_id, utcnow
from alumia.domain.call_record import CallRecord
from alumia.domain.routing import Route
from alumia.domain.usage import TokenUsage
from alumia.services.metering import replay_call
from alumia.services.sweeper import recover
from alumia.sim.env import sim_env
from alumia.sim.server import SimServer
from alumia.storage import holds as hold_rows
from alumia.storage import ledger
from alumia.storage.call_writes import CloseHold, Reserve
from alumia.storage.db import Database
from alumia.storage.outbox import decode_call
from alumia.storage.tables import holds, ledger_entries, orgs, usage_records

from harness import Org, Server, running_server

# Long enough for the test to take its lock after the hold is placed and before the answer comes.
BODY = orjson.dumps({"model": "gpt-5.6-luna",
                     "messages": [{"role": "user", "content": "meter me [[sim:delay_ms=2000]]"}]})
HEADERS = {"Content-Type": "application/json"}
BACKENDS = ["sqlite", "postgres"]


async def eventually(check: Callable[[], Awaitable[object]], what: str, seconds: float = 20) -> object:
    """Poll `check` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if value := await check():
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def outbox_dir(server: Server) -> Path:
    return server.settings.outbox_dir


def files(directory: Path) -> dict[str, bytes]:
    """The outbox's files and their contents."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if not p.name.startswith(".")}


def owners(directory: Path) -> set[str]:
    return {name[:-len(".lock")] for name in files(directory) if name.endswith(".lock")}


def journaled(directory: Path) -> dict[str, CallRecord]:
    """Every call in the journal segments, by request id."""
    out = {}
    for name, data in files(directory).items():
        if name.endswith(".jsonl"):
            for line in data.splitlines():
                call = decode_call(line)
                out[call.request_id] = call
    return out


def kill9(server: Server) -> None:
    """SIGKILL the server process (no lifespan shutdown, no chance to clean up) and reap it."""
    process = server._process
    assert process is not None and process.poll() is None
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL


@asynccontextmanager
async def metering_blocked(db: Database, org_id: str, *, killed: bool = False) -> AsyncIterator[None]:
    """Hold a lock the org's metering transaction needs, until the block ends (nothing is written).

    SQLite: `db.write()` begins with BEGIN IMMEDIATE, the one write lock (the server's writer waits on
    its busy timeout, 10 s). PostgreSQL: the org's row FOR UPDATE, which blocks the usage record's
    foreign key check and every balance update of the org.
    """
    async with db.write() as conn:
        await conn.execute(select(orgs.c.id).where(orgs.c.id == org_id).with_for_update())
        yield
        if killed and not db.is_sqlite:
            # PostgreSQL meters a platform call in one autocommit statement, which would still finish
            # once the lock is released although its client was killed (the server notices a dead
            # client only when it writes to it). A process that dies takes its connections with it:
            # end the statements waiting on this lock before releasing it, as that would.
            await conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                    "AND wait_event_type = 'Lock'"))


async def open_hold_id(db: Database, org_id: str) -> str | None:
    async with db.read() as conn:
        return (await conn.execute(select(holds.c.id).where(holds.c.org_id == org_id,
                                                            holds.c.status == "open"))).scalar()


async def money(db: Database, org_id: str) -> tuple[int, int]:
    """The org's balance and held amount, after checking the balance is the sum of its entries."""
    async with db.read() as conn:
        balance, held = (await conn.execute(select(orgs.c.balance_microcents, orgs.c.held_microcents)
                                            .where(orgs.c.id == org_id))).one()
        assert await ledger.sum_entries(conn, org_id) == balance
    return int(balance), int(held)


async def charged_once(db: Database, org_id: str, request_id: str) -> int:
    """The call's charge, after checking it has one usage record, one ledger entry of that amount, and
    a hold settled with that amount."""
    async with db.read() as conn:
        record = (await conn.execute(select(usage_records).where(usage_records.c.id == request_id))).one()
        entries = (await conn.execute(select(ledger_entries.c.amount_microcents, ledger_entries.c.type)
                                      .where(ledger_entries.c.request_id == request_id))).all()
        hold = await hold_rows.hold_status(conn, request_id)
    charge = int(record.charged_microcents)
    assert record.org_id == org_id and record.route == "platform" and record.status == "ok"
    assert [(int(e.amount_microcents), e.type) for e in entries] == [(-charge, "usage_charge")]
    assert hold is not None and (hold["status"], hold["charged_microcents"]) == ("settled", charge)
    assert 0 < charge <= hold["amount_microcents"]
    return charge


async def post_call(server: Server, org: Org) -> httpx.Response:
    async with server.api(org.key) as api:
        return await api.post("/v1/chat/completions", content=BODY, headers=HEADERS)


def another_server(first: Server, sim: SimServer, label: str, **env: str) -> Server:
    """A new server process on the first one's database and data dir."""
    srv = Server(database_url=first.env["ALUMIA_DATABASE_URL"], data_dir=Path(first.env["ALUMIA_DATA_DIR"]),
                 sim_env=sim_env(sim.host, sim.port), label=label)
    srv.env.update(env)
    return srv


@pytest.mark.parametrize("recoverers", [1, 2], ids=["restart", "two-at-once"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_call_killed_before_its_metering_committed_is_charged_once_after_restart(
        backend: str, recoverers: int, sim: SimServer, tmp_path: Path) -> None:
    async with running_server(backend, tmp_path, sim_env(sim.host, sim.port), f"crash-{backend}") as first:
        org = await first.new_org()
        start, _ = await money(first.db, org.id)
        directory = outbox_dir(first)
        [dead_owner] = owners(directory)

        # A call metered normally: its line stays in the (young) journal segment and must not be
        # charged a second time by the replay.
        control = await post_call(first, org)
        assert control.status_code == 200, control.text
        control_id = control.headers["x-alumia-request-id"]
        control_charge = await charged_once(first.db, org.id, control_id)

        # The call to be killed: wait until its hold is placed, then block its metering.
        crashed = asyncio.create_task(post_call(first, org))
        crashed_id = str(await eventually(lambda: open_hold_id(first.db, org.id), "the call's hold"))
        async with metering_blocked(first.db, org.id, killed=True):
            await eventually(lambda: asyncio.sleep(0, crashed_id in journaled(directory)),
                             "the call's journal line")
            assert not crashed.done()  # the provider answered; the server is stuck in its transaction
            kill9(first)
        with pytest.raises(httpx.TransportError):
            await crashed

        # The usage would be lost now: no record, the hold still open, only the journal knows.
        async with first.db.read() as conn:
            assert (await conn.execute(select(usage_records.c.id)
                                       .where(usage_records.c.id == crashed_id))).first() is None
            assert (await hold_rows.hold_status(conn, crashed_id) or {})["status"] == "open"
        journal = journaled(directory)
        assert set(journal) == {control_id, crashed_id}
        assert owners(directory) == {dead_owner}

        restarted = [another_server(first, sim, f"recover-{backend}-{n}") for n in range(recoverers)]
        try:
            # Each start runs recovery in its lifespan, before /healthz answers.
            await asyncio.gather(*(asyncio.to_thread(srv.start) for srv in restarted))
            charge = await charged_once(first.db, org.id, crashed_id)
            assert charge == journal[crashed_id].charged_microcents
            assert charge == control_charge  # the same call, metered normally, cost exactly this
            assert await charged_once(first.db, org.id, control_id) == control_charge
            assert await money(first.db, org.id) == (start - control_charge - charge, 0)
            async with first.db.read() as conn:
                record = (await conn.execute(select(usage_records)
                                             .where(usage_records.c.id == crashed_id))).one()
            expected = journal[crashed_id]
            assert (record.input_tokens, record.output_tokens, record.created_at.replace(tzinfo=None)) == (
                expected.usage.input_tokens, expected.usage.output_tokens,
                expected.created_at.replace(tzinfo=None))
            remaining = files(directory)
            assert not [name for name in remaining if name.startswith(dead_owner)], remaining
            assert len(owners(directory)) == recoverers  # only the live processes' lock files
            logs = "".join(srv.log_text() for srv in restarted)
            assert "outbox recovery: 1 call(s) of 1 dead process(es) metered now, 1 had committed" in logs
        finally:
            for srv in restarted:
                srv.stop()
                await srv.db.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_process_killed_in_the_middle_of_a_group_commit_charges_every_call_once_after_restart(
        backend: str, sim: SimServer, tmp_path: Path) -> None:
    # Calls' writes are committed in groups (storage/call_writes.py). Three calls are answered and
    # committed; four more are answered by the provider and their settlements wait, journaled, in the
    # group the test's lock blocks (SQLite: at BEGIN IMMEDIATE; PostgreSQL: inside the transaction, at
    # the org row) when the process is killed. After a restart each of the seven is charged once.
    async with running_server(backend, tmp_path, sim_env(sim.host, sim.port), f"group-{backend}") as first:
        org = await first.new_org()
        start, _ = await money(first.db, org.id)
        directory = outbox_dir(first)
        answered = await asyncio.gather(*(post_call(first, org) for _ in range(3)))
        assert [r.status_code for r in answered] == [200] * 3
        answered_ids = [r.headers["x-alumia-request-id"] for r in answered]

        async def holds_open() -> set[str]:
            async with first.db.read() as conn:
                return {r[0] for r in await conn.execute(select(holds.c.id).where(
                    holds.c.org_id == org.id, holds.c.status == "open"))}
        in_flight = [asyncio.create_task(post_call(first, org)) for _ in range(4)]
        blocked_ids = set(await eventually(lambda: _four(holds_open()), "four holds"))
        async with metering_blocked(first.db, org.id, killed=True):
            await eventually(lambda: asyncio.sleep(0, blocked_ids <= set(journaled(directory))),
                             "the four journal lines")
            assert not any(task.done() for task in in_flight)  # answered upstream, waiting on the commit
            kill9(first)
        for task in in_flight:
            with pytest.raises(httpx.TransportError):
                await task
        journal = journaled(directory)
        restarted = another_server(first, sim, f"group-recover-{backend}")
        try:
            await asyncio.to_thread(restarted.start)
            blocked = sorted(blocked_ids)
            charges = [await charged_once(first.db, org.id, rid) for rid in [*answered_ids, *blocked]]
            assert charges[3:] == [journal[rid].charged_microcents for rid in blocked]
            assert await money(first.db, org.id) == (start - sum(charges), 0)
            assert "outbox recovery: 4 call(s) of 1 dead process(es) metered now" in restarted.log_text()
        finally:
            restarted.stop()
            await restarted.db.dispose()


async def _four(ids: Awaitable[set[str]]) -> set[str] | None:
    found = await ids
    return found if len(found) == 4 else None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_live_processs_journal_is_never_touched_by_another_process(
        backend: str, sim: SimServer, tmp_path: Path) -> None:
    async with running_server(backend, tmp_path, sim_env(sim.host, sim.port), f"live-{backend}") as first:
        directory = outbox_dir(first)
        [live_owner] = owners(directory)
        # A second process on the same data dir, sweeping (recover, then expire) every 0.2 s.
        second = another_server(first, sim, f"live-second-{backend}", ALUMIA_HOLD_SWEEP_SECONDS="0.2")
        second.start()
        try:
            org = await first.new_org()
            start, _ = await money(first.db, org.id)
            pending = asyncio.create_task(post_call(first, org))
            request_id = str(await eventually(lambda: open_hold_id(first.db, org.id), "the call's hold"))
            async with metering_blocked(first.db, org.id):
                await eventually(lambda: asyncio.sleep(0, request_id in journaled(directory)),
                                 "the call's journal line")
                before = {k: v for k, v in files(directory).items() if k.startswith(live_owner)}
                assert len(before) == 2  # the lock file and one segment holding the pending call
                await asyncio.sleep(1.5)  # several sweeps of the second server
                # And a recovery from this process: the live owner's lock cannot be taken, so nothing
                # is read or written (a replay would wait on the lock this test holds, and time out).
                result = await asyncio.wait_for(recover(first.db, directory), 5)
                assert (result.owners, result.replayed) == (0, 0)
                after = {k: v for k, v in files(directory).items() if k.startswith(live_owner)}
                assert after == before
                assert not pending.done()
            response = await pending  # the owner commits its own call once the lock is gone
            assert response.status_code == 200, response.text
            charge = await charged_once(first.db, org.id, request_id)
            assert await money(first.db, org.id) == (start - charge, 0)
            assert second._process is not None and second._process.poll() is None
            assert "outbox recovery" not in second.log_text()
        finally:
            second.stop()
            await second.db.dispose()


async def reserved_call(server: Server, org: Org, *, expired: bool) -> CallRecord:
    """A platform call's record with an open hold, as a process that died after the answer leaves it."""
    request_id, now, amount = new_request_id(), utcnow(), 2_000_000
    assert (await server.db.calls.reserve(Reserve(
        hold_id=request_id, org_id=org.id, amount=amount, now=now - timedelta(minutes=10),
        expires_at=now - timedelta(minutes=1) if expired else now + timedelta(minutes=5)))).admitted
    return CallRecord(
        request_id=request_id, org_id=org.id, api_key_id=None, api_key_last_used_at=None, agent_id=None,
        hold_id=request_id, model="gpt-5.6-luna", provider="openai", route=Route.PLATFORM,
        byok_key_id=None, byok_last_used_at=None, stream=False,
        usage=TokenUsage(input_tokens=1_000, output_tokens=400), usage_estimated=False,
        cost_microcents=1_234_567, fee_microcents=67_901, charged_microcents=1_302_468, status="ok",
        http_status=200, error_code=None, latency_ms=900, created_at=now - timedelta(minutes=9))


async def test_replaying_one_call_many_times_at_once_writes_it_once(server: Server) -> None:
    # The flock keeps two recoverers off one journal; the usage record's unique id is the backstop.
    org = await server.new_org()
    start, _ = await money(server.db, org.id)
    call = await reserved_call(server, org, expired=False)
    wrote = await asyncio.gather(*(replay_call(server.db, call) for _ in range(8)))
    assert sorted(wrote) == [False] * 7 + [True]
    assert await charged_once(server.db, org.id, call.request_id) == call.charged_microcents
    assert await money(server.db, org.id) == (start - call.charged_microcents, 0)
    assert await replay_call(server.db, replace(call, charged_microcents=1)) is False  # never rewritten


async def test_a_call_replayed_after_its_hold_expired_is_still_charged_once(server: Server) -> None:
    # The hold closes once (expired, by the sweeper); the client had its answer, so the usage and its
    # charge are recorded all the same.
    org = await server.new_org()
    start, _ = await money(server.db, org.id)
    call = await reserved_call(server, org, expired=True)
    assert await server.db.calls.close_hold(CloseHold(call.hold_id or "", "expired", None, utcnow()))
    assert await money(server.db, org.id) == (start, 0)
    assert await replay_call(server.db, call) is True
    assert await replay_call(server.db, call) is False
    async with server.db.read() as conn:
        hold = await hold_rows.hold_status(conn, call.request_id)
        charges = (await conn.execute(select(func.count()).select_from(ledger_entries)
                                      .where(ledger_entries.c.request_id == call.request_id))).scalar_one()
    assert hold is not None and (hold["status"], hold["charged_microcents"]) == ("expired", None)
    assert charges == 1
    assert await money(server.db, org.id) == (start - call.charged_microcents, 0)

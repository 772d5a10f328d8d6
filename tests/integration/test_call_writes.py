"""storage/call_writes.py on both databases: groups commit together, decide exactly, fail alone."""

import asyncio
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import fields
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from alumia.clock import new_request_id, utcnow
from alumia.storage.call_writes import (
    Backend,
    CloseHold,
    DuplicateWrite,
    GroupCommit,
    Operation,
    Outcome,
    Reserve,
    Settle,
    UsageRow,
)
from alumia.storage.call_writes_postgres import PostgresCallWrites
from alumia.storage.call_writes_sqlite import SqliteCallWrites
from alumia.storage.drivers import asyncpg_dsn, sqlite_path
from alumia.storage.tables import holds, ledger_entries, orgs, usage_records

from harness import Server


class Counted:
    """The real backend, counting the transactions it runs."""

    def __init__(self, backend: Backend) -> None:
        self.backend, self.transactions = backend, 0

    async def run(self, ops: Sequence[Operation]) -> list[Outcome]:
        self.transactions += 1
        return await self.backend.run(ops)

    async def close(self) -> None:
        await self.backend.close()


def counted_writer(server: Server) -> tuple[GroupCommit, Counted]:
    path = sqlite_path(server.db.url)
    counted = Counted(SqliteCallWrites(path) if path else PostgresCallWrites(asyncpg_dsn(server.db.url)))
    return GroupCommit(counted), counted


async def org_money(server: Server, org_id: str) -> tuple[int, int, int]:
    """Balance, held, and the sum of the org's ledger entries."""
    async with server.db.read() as conn:
        balance, held = (await conn.execute(select(orgs.c.balance_microcents, orgs.c.held_microcents)
                                            .where(orgs.c.id == org_id))).one()
        total = (await conn.execute(select(func.coalesce(func.sum(ledger_entries.c.amount_microcents), 0))
                                    .where(ledger_entries.c.org_id == org_id))).scalar_one()
    return int(balance), int(held), int(total)


def usage(org_id: str, request_id: str, charge: int) -> UsageRow:
    return UsageRow(
        id=request_id, org_id=org_id, api_key_id=None, agent_id=None, model="gpt-5.6-luna", provider="openai",
        route="platform", byok=False, byok_key_id=None, stream=False, input_tokens=10, output_tokens=20,
        cache_read_tokens=0, cache_write_tokens=0, reasoning_tokens=0, usage_estimated=False,
        cost_microcents=charge, fee_microcents=0, charged_microcents=charge, status="ok", http_status=200,
        error_code=None, latency_ms=3, api="chat", created_at=utcnow())


def test_a_usage_row_has_exactly_the_columns_of_usage_records() -> None:
    assert [f.name for f in fields(UsageRow)] == [c.name for c in usage_records.columns]


async def test_concurrent_reservations_share_transactions_and_admit_exactly_what_fits(server: Server) -> None:
    org = await server.new_org()
    balance, held, _ = await org_money(server, org.id)
    amount = balance // 17 + 1  # 16 fit, the 17th does not
    writer, counted = counted_writer(server)
    now = utcnow()
    try:
        outcomes = await asyncio.gather(*(writer.reserve(Reserve(
            hold_id=new_request_id(), org_id=org.id, amount=amount, now=now,
            expires_at=now + timedelta(minutes=5))) for _ in range(30)))
    finally:
        await writer.close()
    assert sum(o.admitted for o in outcomes) == (balance - held) // amount == 16
    assert counted.transactions < 30  # grouped: in practice 1 or 2
    # Each refusal says what was available when it was decided: what the admitted ones left.
    assert {o.available for o in outcomes if not o.admitted} == {balance - held - 16 * amount}
    assert await org_money(server, org.id) == (balance, held + 16 * amount, balance)


async def test_one_failing_write_in_a_group_fails_alone(server: Server) -> None:
    org = await server.new_org()
    balance, _, _ = await org_money(server, org.id)
    first, other = new_request_id(), new_request_id()
    again = first  # the same request id twice in one group
    writer, counted = counted_writer(server)
    try:
        outcomes = await asyncio.gather(
            *(writer.settle(Settle(row=usage(org.id, request_id, 1_000), hold_id=None, charge=1_000,
                                   description="d", idempotency_key=f"usage:{request_id}"))
              for request_id in (first, again, other)), return_exceptions=True)
    finally:
        await writer.close()
    assert isinstance(outcomes[1], DuplicateWrite) != isinstance(outcomes[0], DuplicateWrite)
    assert not isinstance(outcomes[2], BaseException)
    assert counted.transactions >= 2  # the group, then each alone
    async with server.db.read() as conn:
        ids = sorted(r[0] for r in await conn.execute(
            select(usage_records.c.id).where(usage_records.c.org_id == org.id)))
    assert ids == sorted([first, other])
    assert await org_money(server, org.id) == (balance - 2_000, 0, balance - 2_000)


async def test_a_hold_closes_once_and_a_settlement_after_expiry_still_charges(server: Server) -> None:
    org = await server.new_org()
    balance, _, _ = await org_money(server, org.id)
    now, hold_id = utcnow(), new_request_id()
    calls = server.db.calls
    assert (await calls.reserve(Reserve(hold_id, org.id, 50_000, now, now + timedelta(minutes=1)))).admitted
    expire = CloseHold(hold_id, "expired", None, now)
    freed = await asyncio.gather(*(calls.close_hold(expire) for _ in range(3)))
    assert sorted(freed) == [0, 0, 50_000]
    settled = await calls.settle(Settle(row=usage(org.id, hold_id, 7_000), hold_id=hold_id, charge=7_000,
                                        description="d", idempotency_key=f"usage:{hold_id}"))
    assert (settled.freed, settled.balance_after) == (False, balance - 7_000)
    async with server.db.read() as conn:
        status = (await conn.execute(select(holds.c.status).where(holds.c.id == hold_id))).scalar_one()
    assert status == "expired"
    assert await org_money(server, org.id) == (balance - 7_000, 0, balance - 7_000)


@pytest.mark.parametrize("charge", [0, 9_000])
async def test_a_settlement_closes_its_hold_as_settled_or_released(server: Server, charge: int) -> None:
    org = await server.new_org()
    balance, _, _ = await org_money(server, org.id)
    now, hold_id = utcnow(), new_request_id()
    calls = server.db.calls
    assert (await calls.reserve(Reserve(hold_id, org.id, 10_000, now, now + timedelta(minutes=1)))).admitted
    settled = await calls.settle(Settle(row=usage(org.id, hold_id, charge), hold_id=hold_id, charge=charge,
                                        description="d", idempotency_key=f"usage:{hold_id}"))
    assert settled.freed and settled.balance_after == (balance - charge if charge else None)
    async with server.db.read() as conn:
        hold = (await conn.execute(select(holds.c.status, holds.c.charged_microcents)
                                   .where(holds.c.id == hold_id))).one()
    assert tuple(hold) == (("settled", charge) if charge else ("released", 0))
    assert await org_money(server, org.id) == (balance - charge, 0, balance - charge)


def settle_op(org_id: str, charge: int = 1_000) -> Settle:
    request_id = new_request_id()
    return Settle(row=usage(org_id, request_id, charge), hold_id=None, charge=charge, description="d",
                  idempotency_key=f"usage:{request_id}")


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
async def test_on_sqlite_a_group_waits_off_the_loop_while_another_writer_holds_the_lock(
        server: Server) -> None:
    path = sqlite_path(server.db.url)
    assert path
    org = await server.new_org()
    balance, _, _ = await org_money(server, org.id)
    other = sqlite3.connect(path, isolation_level=None)
    writer = GroupCommit(SqliteCallWrites(path))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer, say a deposit
        settling = asyncio.create_task(writer.settle(settle_op(org.id)))
        await asyncio.sleep(0.5)
        assert not settling.done()  # waiting for the lock, not failed for it ...
        assert ticks >= 10  # ... and not on the event loop, which went on running
        other.execute("COMMIT")
        settled = await asyncio.wait_for(settling, 10)
    finally:
        ticker.cancel()
        other.close()
        await writer.close()
    assert settled.balance_after == balance - 1_000
    assert await org_money(server, org.id) == (balance - 1_000, 0, balance - 1_000)


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
async def test_on_sqlite_the_groups_written_on_the_loop_are_checkpointed(server: Server) -> None:
    path = sqlite_path(server.db.url)
    assert path
    org = await server.new_org()

    def wal_frames() -> int:
        """The frames in the write-ahead log; checkpointing them all lets the next write start it over."""
        with closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

    async def frames_after_300_groups(checkpoint_every: int) -> int:
        backend = SqliteCallWrites(path)
        backend.CHECKPOINT_EVERY = checkpoint_every
        writer = GroupCommit(backend)
        wal_frames()
        try:
            for _ in range(300):
                await writer.settle(settle_op(org.id, charge=1))
                await asyncio.sleep(0.005)  # time for a checkpoint on the writer thread, on a busy machine
        finally:
            await writer.close()
        return wal_frames()

    never, every_ten = await frames_after_300_groups(10**9), await frames_after_300_groups(10)
    assert never >= 300  # each group's commit appended frames that the loop's connection never copied back
    assert every_ten < never / 2  # checkpoints let the log start over: it stays bounded

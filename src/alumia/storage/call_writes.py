"""The writes a model call makes, committed in groups: reserve a hold, settle it, close it.

Why groups: each call used to pay a write transaction of its own (a reservation, then a settlement),
and on SQLite calls queued behind one another's `BEGIN IMMEDIATE ... COMMIT`. Here one writer per
process (`GroupCommit`) gathers every operation submitted while the previous transaction ran and
commits them together, so the number of transactions follows the database's pace, not the number of
calls. Each caller still waits for the commit that carries its operation: once `submit` returns, the
write is in the database, exactly as with a transaction of its own (a reservation is decided, a
settled call's charge is visible to every process).

Each operation is decided by the same conditional statements as before (storage/call_writes_sqlite.py
and storage/call_writes_postgres.py hold them, per database, on the driver directly): a reservation is
admitted only if the org's balance minus what is held covers it, under any concurrency, in any number
of processes; a hold closes exactly once. If one operation of a group fails (a duplicate request id
replayed from the outbox, a constraint), the group is rolled back and every operation is retried in a
transaction of its own, so one failure is reported to its own caller only.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

log = logging.getLogger("alumia.storage.call_writes")


class DuplicateWrite(Exception):
    """The operation's row exists already (a request id or idempotency key written before)."""


class StorageUnavailable(Exception):
    """The database could not carry out the write (down, locked past the busy timeout, disk full)."""


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One `usage_records` row; its fields are the table's columns (a test keeps them in step)."""

    id: str
    org_id: str
    api_key_id: str | None
    agent_id: str | None
    model: str
    provider: str
    route: str
    byok: bool
    byok_key_id: str | None
    stream: bool
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    usage_estimated: bool
    cost_microcents: int
    fee_microcents: int
    charged_microcents: int
    status: str
    http_status: int
    error_code: str | None
    latency_ms: int
    api: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Reserve:
    """Set `amount` aside for a platform call, if the org's available balance covers it."""

    hold_id: str
    org_id: str
    amount: int
    now: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Reserved:
    """A reservation's outcome; `available` is balance − held just before it was decided."""

    admitted: bool
    available: int


@dataclass(frozen=True, slots=True)
class Settle:
    """A finished call: its usage record, its hold closed, its charge taken, keys' lastUsedAt refreshed.

    `charge` 0 takes no money (BYOK, free, or a call that failed); the hold, if any, is then released
    rather than settled. `touch_keys` are the (table, id) pairs whose lastUsedAt to set to `row.created_at`.
    """

    row: UsageRow
    hold_id: str | None
    charge: int
    description: str
    idempotency_key: str
    touch_keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Settled:
    """The balance after the charge (None when nothing was charged), and whether the hold was still open."""

    balance_after: int | None
    freed: bool


@dataclass(frozen=True, slots=True)
class CloseHold:
    """Close an open hold with no usage record: `released` (the call ended before metering) or `expired`."""

    hold_id: str
    status: str
    charged: int | None
    now: datetime


Operation = Reserve | Settle | CloseHold
Outcome = Reserved | Settled | int  # CloseHold gives the amount freed, 0 when it was already closed


class Backend(Protocol):
    """One database's way of running a group of operations in one transaction."""

    async def run(self, ops: Sequence[Operation]) -> list[Outcome]:
        """Apply `ops` in order in one transaction and commit; raise (nothing committed) if any fails."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


class GroupCommit:
    """Runs operations on one backend, one transaction per group of the operations waiting together.

    It belongs to the event loop that first submits to it (a process has one).
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._waiting: list[tuple[Operation, asyncio.Future[Outcome]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, op: Operation) -> Outcome:
        """Apply one operation; returns once the transaction that carries it has committed."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((op, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups())
        return await future

    async def reserve(self, op: Reserve) -> Reserved:
        """`submit` for a reservation."""
        outcome = await self.submit(op)
        assert isinstance(outcome, Reserved)
        return outcome

    async def settle(self, op: Settle) -> Settled:
        """`submit` for a settlement."""
        outcome = await self.submit(op)
        assert isinstance(outcome, Settled)
        return outcome

    async def close_hold(self, op: CloseHold) -> int:
        """`submit` for closing a hold; the amount freed."""
        outcome = await self.submit(op)
        assert isinstance(outcome, int)
        return outcome

    async def _write_groups(self) -> None:
        # Runs while anything waits; what arrives during a transaction forms the next group.
        while self._waiting:
            group, self._waiting = self._waiting, []
            await self._write(group)

    async def _write(self, group: list[tuple[Operation, asyncio.Future[Outcome]]]) -> None:
        ops = [op for op, _ in group]
        try:
            outcomes = await self._backend.run(ops)
        except Exception as exc:
            if len(group) == 1:
                _settle_future(group[0][1], error=exc)
                return
            log.info("a group of %s writes failed (%s); writing each alone", len(group), type(exc).__name__)
            for op, future in group:
                try:
                    outcome = (await self._backend.run([op]))[0]
                except Exception as alone:
                    _settle_future(future, error=alone)
                else:
                    _settle_future(future, outcome=outcome)
            return
        for (_, future), outcome in zip(group, outcomes, strict=True):
            _settle_future(future, outcome=outcome)

    async def close(self) -> None:
        """Finish what waits, then release the connection."""
        if self._writer is not None and not self._writer.done():
            await self._writer
        await self._backend.close()


def _settle_future(future: asyncio.Future[Outcome], *, outcome: Outcome | None = None,
                   error: BaseException | None = None) -> None:
    # A caller that was cancelled (its client left) no longer waits; the write stands all the same.
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert outcome is not None
        future.set_result(outcome)

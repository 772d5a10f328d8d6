"""A call's writes on SQLite: each group is one `BEGIN IMMEDIATE ... COMMIT` on the sqlite3 driver.

The connection lives on one thread of its own, and a whole group runs there in one hop: the event loop
never waits on the file, and no statement pays SQLAlchemy's per-statement machinery. Values are bound
with the same conversions SQLAlchemy applies (timestamps as its text format, booleans as 0/1), so the
rows read back through SQLAlchemy exactly as rows it wrote.

Durability: WAL with `synchronous=NORMAL`, as for every connection of this database (storage/db.py): a
commit survives the process being killed; a power loss may lose the last commits, which the outbox
(storage/outbox.py) does not cover either. Deposits and refunds are written by SQLAlchemy with the
same setting.
"""

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, fields
from datetime import datetime

from sqlalchemy.dialects import sqlite

from alumia.storage.call_writes import (
    CloseHold,
    DuplicateWrite,
    Operation,
    Outcome,
    Reserve,
    Reserved,
    Settle,
    Settled,
    StorageUnavailable,
    UsageRow,
)
from alumia.storage.tables import Timestamp

_DIALECT = sqlite.dialect()
_bind_timestamp = Timestamp.dialect_impl(_DIALECT).bind_processor(_DIALECT)
assert _bind_timestamp is not None
# SQLAlchemy types a bind processor's result as Any; Timestamp's gives text for SQLite.
_timestamp: Callable[[datetime | None], str | None] = _bind_timestamp


def _ts(value: datetime | None) -> str | None:
    return _timestamp(value)


_USAGE_COLUMNS = [f.name for f in fields(UsageRow)]
_INSERT_USAGE = (f"INSERT INTO usage_records ({', '.join(_USAGE_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(_USAGE_COLUMNS))})")
_ADMIT = ("UPDATE orgs SET held_microcents = held_microcents + ?1 "
          "WHERE id = ?2 AND balance_microcents - held_microcents >= ?1")
_AVAILABLE = "SELECT balance_microcents - held_microcents FROM orgs WHERE id = ?"
_INSERT_HOLD = ("INSERT INTO holds (id, org_id, amount_microcents, status, created_at, expires_at) "
                "VALUES (?, ?, ?, 'open', ?, ?)")
_CLOSE_HOLD = ("UPDATE holds SET status = ?, charged_microcents = ?, closed_at = ? "
               "WHERE id = ? AND status = 'open' RETURNING org_id, amount_microcents")
_UNHOLD = "UPDATE orgs SET held_microcents = held_microcents - ? WHERE id = ?"
_CHARGE = ("UPDATE orgs SET balance_microcents = balance_microcents - ? WHERE id = ? "
           "RETURNING balance_microcents")
_INSERT_ENTRY = ("INSERT INTO ledger_entries (org_id, type, amount_microcents, balance_after_microcents, "
                 "description, request_id, idempotency_key, created_at) "
                 "VALUES (?, 'usage_charge', ?, ?, ?, ?, ?, ?)")
_TOUCH = {"byok_keys": "UPDATE byok_keys SET last_used_at = ? WHERE id = ?",
          "api_keys": "UPDATE api_keys SET last_used_at = ? WHERE id = ?"}


def _usage_values(row: UsageRow) -> tuple[object, ...]:
    values = list(astuple(row))
    values[-1] = _ts(row.created_at)
    return tuple(int(v) if isinstance(v, bool) else v for v in values)


class SqliteCallWrites:
    """The `Backend` of storage/call_writes.py for a SQLite file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alumia-call-writes")
        self._conn: sqlite3.Connection | None = None

    async def run(self, ops: Sequence[Operation]) -> list[Outcome]:
        """Apply `ops` in one transaction on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, list(ops))

    async def close(self) -> None:
        """Close the connection on its thread and stop the thread."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON"):
                conn.execute(f"PRAGMA {pragma}")
            self._conn = conn
        return self._conn

    def _run(self, ops: list[Operation]) -> list[Outcome]:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc)) from exc
        try:
            outcomes = [self._apply(conn, op) for op in ops]
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise DuplicateWrite(str(exc)) from exc
            if isinstance(exc, sqlite3.Error):
                raise StorageUnavailable(str(exc)) from exc
            raise
        return outcomes

    def _apply(self, conn: sqlite3.Connection, op: Operation) -> Outcome:
        apply: Callable[[sqlite3.Connection, Operation], Outcome] = _APPLY[type(op)]
        return apply(conn, op)


def _reserve(conn: sqlite3.Connection, op: Reserve) -> Reserved:
    available = conn.execute(_AVAILABLE, (op.org_id,)).fetchone()
    if available is None:
        return Reserved(admitted=False, available=0)
    if conn.execute(_ADMIT, (op.amount, op.org_id)).rowcount != 1:
        return Reserved(admitted=False, available=int(available[0]))
    conn.execute(_INSERT_HOLD, (op.hold_id, op.org_id, op.amount, _ts(op.now), _ts(op.expires_at)))
    return Reserved(admitted=True, available=int(available[0]))


def _close(conn: sqlite3.Connection, hold_id: str, status: str, charged: int | None, now: datetime) -> int:
    closed = conn.execute(_CLOSE_HOLD, (status, charged, _ts(now), hold_id)).fetchone()
    if closed is None:
        return 0
    conn.execute(_UNHOLD, (closed[1], closed[0]))
    return int(closed[1])


def _settle(conn: sqlite3.Connection, op: Settle) -> Settled:
    row = op.row
    conn.execute(_INSERT_USAGE, _usage_values(row))
    freed = True
    if op.hold_id is not None:
        status = "settled" if op.charge else "released"
        freed = bool(_close(conn, op.hold_id, status, op.charge, row.created_at))
    balance_after = None
    if op.charge:
        balance_after = int(conn.execute(_CHARGE, (op.charge, row.org_id)).fetchone()[0])
        conn.execute(_INSERT_ENTRY, (row.org_id, -op.charge, balance_after, op.description, row.id,
                                     op.idempotency_key, _ts(row.created_at)))
    for table, key_id in op.touch_keys:
        conn.execute(_TOUCH[table], (_ts(row.created_at), key_id))
    return Settled(balance_after=balance_after, freed=freed)


def _close_hold(conn: sqlite3.Connection, op: CloseHold) -> int:
    return _close(conn, op.hold_id, op.status, op.charged, op.now)


_APPLY: dict[type, Callable[[sqlite3.Connection, object], Outcome]] = {
    Reserve: _reserve, Settle: _settle, CloseHold: _close_hold,  # type: ignore[dict-item]
}

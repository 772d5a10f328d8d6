"""A call's writes on SQLite: each group is one `BEGIN IMMEDIATE ... COMMIT` on the sqlite3 driver.

A whole group runs in one go, on the event loop when the write lock is free and else on a writer
thread of its own (see SqliteCallWrites), and no statement pays SQLAlchemy's per-statement machinery.
Values are bound with the same conversions SQLAlchemy applies (timestamps as its text format, booleans
as 0/1), so the rows read back through SQLAlchemy exactly as rows it wrote.

Durability: WAL with `synchronous=NORMAL`, as for every connection of this database (storage/db.py): a
commit survives the process being killed; a power loss may lose the last commits, which the outbox
(storage/outbox.py) does not cover either. Deposits and refunds are written by SQLAlchemy with the
same setting.
"""

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, fields
from datetime import datetime

from sqlalchemy.dialects import sqlite

from alumia.storage.call_writes import (
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
    """The `Backend` of storage/call_writes.py for a SQLite file.

    A group runs on the event loop when the file's write lock is free: a connection of the loop's own
    that never waits for the lock (busy_timeout 0) takes it, or, if another connection or process holds
    it, the group goes to the writer thread, whose connection waits up to 10 s. Handing a group to a
    thread cost more than the group itself (a wake-up, a context switch and the GIL going back and
    forth, about 12 % of the loop's time under streaming load, bench/results.md); the transaction is a
    few small statements and a write() into the WAL with no fsync (`synchronous=NORMAL`), so it does
    not wait on the disk. The loop's connection never checkpoints (`wal_autocheckpoint=0`), which can
    fsync: every CHECKPOINT_EVERY groups a passive checkpoint runs on the writer thread instead.
    """

    CHECKPOINT_EVERY = 200

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alumia-call-writes")
        self._conn: sqlite3.Connection | None = None  # the writer thread's
        self._here: sqlite3.Connection | None = None  # the event loop's
        self._since_checkpoint = 0
        self._checkpoint: asyncio.Future[None] | None = None

    async def run(self, ops: Sequence[Operation]) -> list[Outcome]:
        """Apply `ops` in one transaction: on the loop if the write lock is free, else on the thread."""
        outcomes = self._run_here(ops)
        if outcomes is None:
            outcomes = await asyncio.get_running_loop().run_in_executor(self._thread, self._run, list(ops))
        return outcomes

    async def close(self) -> None:
        """Close both connections (the thread's on its thread) and stop the thread."""
        if self._here is not None:
            self._here.close()
            self._here = None
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self, busy_ms: int, autocheckpoint: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={busy_ms}", "foreign_keys=ON",
                       f"wal_autocheckpoint={autocheckpoint}"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    def _run_here(self, ops: Sequence[Operation]) -> list[Outcome] | None:
        """The group on the loop, or None (nothing done) when the write lock is taken."""
        if self._here is None:
            try:
                self._here = self._open(busy_ms=0, autocheckpoint=0)
            except sqlite3.Error:
                return None  # the thread's path reports what is wrong
        try:
            self._here.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # SQLITE_BUSY: another writer holds the lock; the thread waits
            return None
        outcomes = _transaction(self._here, ops)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.CHECKPOINT_EVERY and (
                self._checkpoint is None or self._checkpoint.done()):
            self._since_checkpoint = 0
            self._checkpoint = asyncio.get_running_loop().run_in_executor(self._thread, self._wal_checkpoint)
        return outcomes

    def _wal_checkpoint(self) -> None:
        # PASSIVE: copies what it can without waiting for, or blocking, readers and writers.
        with contextlib.suppress(sqlite3.Error):  # the next one tries again; the WAL only grows meanwhile
            self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open(busy_ms=10_000, autocheckpoint=1000)
        return self._conn

    def _run(self, ops: list[Operation]) -> list[Outcome]:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc)) from exc
        return _transaction(conn, ops)


def _transaction(conn: sqlite3.Connection, ops: Sequence[Operation]) -> list[Outcome]:
    """Apply `ops` in the transaction `conn` has begun, and commit it (or roll it back and raise)."""
    try:
        outcomes = [_apply(conn, op) for op in ops]
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


def _apply(conn: sqlite3.Connection, op: Operation) -> Outcome:
    if isinstance(op, Reserve):
        return _reserve(conn, op)
    if isinstance(op, Settle):
        return _settle(conn, op)
    return _close(conn, op.hold_id, op.status, op.charged, op.now)


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

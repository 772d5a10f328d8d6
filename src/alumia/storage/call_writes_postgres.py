"""A call's writes on PostgreSQL: each group is one transaction on an asyncpg connection of its own.

Statements are prepared once per connection (asyncpg's statement cache) and bound with native types.
Row locks: a group's operations are applied in the order submitted; a settlement locks its hold's row
and then its org's row, a reservation only its org's row before inserting its own new hold, as every
other writer of these rows does (services/sweeper.py, the outbox replay), so two processes'
groups touching the same orgs can at worst wait on each other, and PostgreSQL's deadlock detector
turns a cycle between two groups into an error that GroupCommit answers by writing each alone.
"""

from collections.abc import Sequence
from dataclasses import astuple, fields

import asyncpg

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

_USAGE_COLUMNS = [f.name for f in fields(UsageRow)]
_INSERT_USAGE = (f"INSERT INTO usage_records ({', '.join(_USAGE_COLUMNS)}) "
                 f"VALUES ({', '.join(f'${i}' for i in range(1, len(_USAGE_COLUMNS) + 1))})")
# The UPDATE decides; the subquery reads what was available before it (same snapshot), for the 402.
_RESERVE = """
WITH before AS (SELECT balance_microcents - held_microcents AS available FROM orgs WHERE id = $2),
admitted AS (
  UPDATE orgs SET held_microcents = held_microcents + $3
  WHERE id = $2 AND balance_microcents - held_microcents >= $3 RETURNING id),
hold AS (
  INSERT INTO holds (id, org_id, amount_microcents, status, created_at, expires_at)
  SELECT $1, id, $3, 'open', $4, $5 FROM admitted RETURNING id)
SELECT (SELECT available FROM before) AS available, (SELECT count(*) FROM hold) AS admitted
"""
_CLOSE_HOLD = """
WITH closed AS (
  UPDATE holds SET status = $2, charged_microcents = $3, closed_at = $4
  WHERE id = $1 AND status = 'open' RETURNING org_id, amount_microcents),
freed AS (
  UPDATE orgs SET held_microcents = held_microcents - closed.amount_microcents
  FROM closed WHERE orgs.id = closed.org_id RETURNING closed.amount_microcents)
SELECT coalesce((SELECT amount_microcents FROM freed), 0)
"""
_CHARGE = """
WITH moved AS (
  UPDATE orgs SET balance_microcents = balance_microcents - $2 WHERE id = $1
  RETURNING balance_microcents)
INSERT INTO ledger_entries (org_id, type, amount_microcents, balance_after_microcents, description,
                            request_id, idempotency_key, created_at)
SELECT $1, 'usage_charge', -$2::bigint, balance_microcents, $3, $4, $5, $6 FROM moved
RETURNING balance_after_microcents
"""
_TOUCH = {"byok_keys": "UPDATE byok_keys SET last_used_at = $1 WHERE id = $2",
          "api_keys": "UPDATE api_keys SET last_used_at = $1 WHERE id = $2"}
# A connection that is gone, or a server that refuses to work: the write did not happen.
_UNAVAILABLE = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.PostgresError, OSError,
                TimeoutError)


class PostgresCallWrites:
    """The `Backend` of storage/call_writes.py for a PostgreSQL database."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=10)
        return self._conn

    async def run(self, ops: Sequence[Operation]) -> list[Outcome]:
        """Apply `ops` in one transaction."""
        try:
            conn = await self._connection()
            async with conn.transaction():
                return [await self._apply(conn, op) for op in ops]
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateWrite(str(exc)) from exc
        except _UNAVAILABLE as exc:
            if self._conn is not None and not self._conn.is_closed() and isinstance(
                    exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | OSError | TimeoutError):
                self._conn.terminate()  # a connection in an unknown state is not reused
            raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None

    async def _apply(self, conn: asyncpg.Connection, op: Operation) -> Outcome:
        if isinstance(op, Reserve):
            row = await conn.fetchrow(_RESERVE, op.hold_id, op.org_id, op.amount, op.now, op.expires_at)
            available = row["available"]
            return Reserved(admitted=bool(row["admitted"]), available=int(available or 0))
        if isinstance(op, CloseHold):
            return int(await conn.fetchval(_CLOSE_HOLD, op.hold_id, op.status, op.charged, op.now))
        return await _settle(conn, op)


async def _settle(conn: asyncpg.Connection, op: Settle) -> Settled:
    row = op.row
    await conn.execute(_INSERT_USAGE, *astuple(row))
    freed = True
    if op.hold_id is not None:
        status = "settled" if op.charge else "released"
        freed = bool(await conn.fetchval(_CLOSE_HOLD, op.hold_id, status, op.charge, row.created_at))
    balance_after = None
    if op.charge:
        balance_after = int(await conn.fetchval(_CHARGE, row.org_id, op.charge, op.description, row.id,
                                                op.idempotency_key, row.created_at))
    for table, key_id in op.touch_keys:
        await conn.execute(_TOUCH[table], row.created_at, key_id)
    return Settled(balance_after=balance_after, freed=freed)

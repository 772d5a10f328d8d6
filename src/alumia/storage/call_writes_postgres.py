"""A call's writes on PostgreSQL: each group is one transaction on an asyncpg connection of its own.

Each operation is one statement (data-modifying CTEs), prepared once per connection (asyncpg's statement
cache) and bound with native types. A group of one operation runs in autocommit, one round trip; a larger
group runs in one transaction.
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
# A settlement is one statement: the record, the hold closed if still open, the balance and held amount
# moved in one UPDATE of the org row (taken only when there is something to move), the ledger entry with
# the balance that UPDATE returned. $1..$24 are the usage row; then hold id, hold status, charge,
# description, idempotency key.
_N = len(_USAGE_COLUMNS)
_SETTLE = f"""
WITH record AS (
  INSERT INTO usage_records ({', '.join(_USAGE_COLUMNS)})
  VALUES ({', '.join(f'${i}' for i in range(1, _N + 1))})),
closed AS (
  UPDATE holds SET status = ${_N + 2}, charged_microcents = ${_N + 3}::bigint, closed_at = ${_N}
  WHERE id = ${_N + 1} AND status = 'open' RETURNING amount_microcents),
moved AS (
  UPDATE orgs SET balance_microcents = balance_microcents - ${_N + 3}::bigint,
                  held_microcents = held_microcents - coalesce((SELECT amount_microcents FROM closed), 0)
  WHERE id = $2 AND (${_N + 3}::bigint > 0 OR EXISTS (SELECT 1 FROM closed))
  RETURNING balance_microcents),
entry AS (
  INSERT INTO ledger_entries (org_id, type, amount_microcents, balance_after_microcents, description,
                              request_id, idempotency_key, created_at)
  SELECT $2, 'usage_charge', -${_N + 3}::bigint, balance_microcents, ${_N + 4}, $1, ${_N + 5}, ${_N}
  FROM moved WHERE ${_N + 3}::bigint > 0)
SELECT (SELECT balance_microcents FROM moved) AS balance, (SELECT count(*) FROM closed) AS freed
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
            if len(ops) == 1 and not (isinstance(ops[0], Settle) and ops[0].touch_keys):
                # One statement is atomic on its own: autocommit spares BEGIN and COMMIT, two round trips.
                return [await self._apply(conn, ops[0])]
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
    status = "settled" if op.charge else "released"
    result = await conn.fetchrow(_SETTLE, *astuple(row), op.hold_id, status, op.charge, op.description,
                                 op.idempotency_key)
    for table, key_id in op.touch_keys:
        await conn.execute(_TOUCH[table], row.created_at, key_id)
    freed = op.hold_id is None or bool(result["freed"])
    balance_after = int(result["balance"]) if op.charge else None
    return Settled(balance_after=balance_after, freed=freed)

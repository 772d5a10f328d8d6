"""Ledger entries and the org balance they add up to, written in the caller's transaction."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import ledger_entries, orgs


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A money movement to record. amount is signed microcents: + credits, − charges."""

    org_id: str
    type: str
    amount_microcents: int
    description: str
    idempotency_key: str
    request_id: str | None = None


async def entry_by_key(conn: AsyncConnection, idempotency_key: str) -> dict[str, Any] | None:
    """The entry recorded under this idempotency key, or None."""
    row = (await conn.execute(
        select(ledger_entries).where(ledger_entries.c.idempotency_key == idempotency_key))).first()
    return dict(row._mapping) if row else None


# Built once: the hot path binds parameters instead of building and compiling a statement per call.
_MOVE_BALANCE = (
    update(orgs)
    .where(orgs.c.id == bindparam("b_org_id"))
    .values(balance_microcents=orgs.c.balance_microcents + bindparam("b_amount"),
            cumulative_deposits_cents=orgs.c.cumulative_deposits_cents + bindparam("b_deposit"))
    .returning(orgs.c.balance_microcents)
)
_INSERT_ENTRY = insert(ledger_entries)


async def append(conn: AsyncConnection, entry: NewEntry, now: datetime,
                 cumulative_deposit_cents: int = 0) -> int:
    """Move the balance and record the entry; returns the balance after it, in microcents.

    The balance column is a cache of the sum of entries, changed only here and in the same
    transaction as the entry. A duplicate idempotency key fails the insert (IntegrityError), which
    rolls the balance change back with it.
    """
    result = await conn.execute(_MOVE_BALANCE, {"b_org_id": entry.org_id, "b_amount": entry.amount_microcents,
                                                "b_deposit": cumulative_deposit_cents})
    balance_after: int = result.scalar_one()
    await conn.execute(_INSERT_ENTRY, {
        "org_id": entry.org_id, "type": entry.type, "amount_microcents": entry.amount_microcents,
        "balance_after_microcents": balance_after, "description": entry.description,
        "request_id": entry.request_id, "idempotency_key": entry.idempotency_key, "created_at": now})
    return balance_after


async def list_entries(conn: AsyncConnection, org_id: str, *, before_id: int | None,
                       limit: int) -> list[dict[str, Any]]:
    """An org's entries, newest first, `limit` of them after the cursor."""
    query = select(ledger_entries).where(ledger_entries.c.org_id == org_id)
    if before_id is not None:
        query = query.where(ledger_entries.c.id < before_id)
    rows = await conn.execute(query.order_by(ledger_entries.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]


async def sum_entries(conn: AsyncConnection, org_id: str) -> int:
    """The sum of an org's entries: what its balance must equal."""
    result = await conn.execute(
        select(func.coalesce(func.sum(ledger_entries.c.amount_microcents), 0))
        .where(ledger_entries.c.org_id == org_id))
    return int(result.scalar_one())

"""Holds: reserve before a platform call, close exactly once (settled, released or expired)."""

from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import holds, orgs

# One statement decides admission: it only raises `held` when the available balance covers the
# amount, so concurrent reservations (any number of processes) cannot spend the same microcents.
_RESERVE = (
    update(orgs)
    .where(orgs.c.id == bindparam("b_org_id"),
           orgs.c.balance_microcents - orgs.c.held_microcents >= bindparam("b_amount"))
    .values(held_microcents=orgs.c.held_microcents + bindparam("b_amount"))
    .returning(orgs.c.balance_microcents)
)
_UNHOLD = (update(orgs).where(orgs.c.id == bindparam("b_org_id"))
           .values(held_microcents=orgs.c.held_microcents - bindparam("b_amount")))
_CLOSE = (update(holds).where(holds.c.id == bindparam("b_id"), holds.c.status == "open")
          .values(status=bindparam("b_status"), charged_microcents=bindparam("b_charged"),
                  closed_at=bindparam("b_now"))
          .returning(holds.c.org_id, holds.c.amount_microcents))


async def reserve(conn: AsyncConnection, *, hold_id: str, org_id: str, amount: int, now: datetime,
                  expires_at: datetime) -> bool:
    """Set `amount` aside if the available balance covers it; False (nothing written) when it does not."""
    admitted = (await conn.execute(_RESERVE, {"b_org_id": org_id, "b_amount": amount})).first()
    if admitted is None:
        return False
    await conn.execute(insert(holds).values(id=hold_id, org_id=org_id, amount_microcents=amount,
                                            status="open", created_at=now, expires_at=expires_at))
    return True


async def close(conn: AsyncConnection, hold_id: str, status: str, charged: int | None, now: datetime) -> int:
    """Close an open hold and free its amount; returns the amount freed, 0 when it was already closed."""
    closed = (await conn.execute(_CLOSE, {"b_id": hold_id, "b_status": status, "b_charged": charged,
                                          "b_now": now})).first()
    if closed is None:
        return 0
    await conn.execute(_UNHOLD, {"b_org_id": closed.org_id, "b_amount": closed.amount_microcents})
    return int(closed.amount_microcents)


async def expired_ids(conn: AsyncConnection, now: datetime, limit: int = 500) -> list[str]:
    """Open holds past their expiry (left by a process that died mid-call)."""
    rows = await conn.execute(select(holds.c.id).where(holds.c.status == "open", holds.c.expires_at < now)
                              .limit(limit))
    return [r[0] for r in rows]


async def hold_status(conn: AsyncConnection, hold_id: str) -> dict | None:
    """A hold's row."""
    row = (await conn.execute(select(holds).where(holds.c.id == hold_id))).first()
    return dict(row._mapping) if row else None

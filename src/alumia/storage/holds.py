"""Reading holds. They are written by the calls' group commit (storage/call_writes.py): reserved before a
platform call, closed exactly once (settled, released or expired)."""

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import holds


async def expired_ids(conn: AsyncConnection, now: datetime, limit: int = 500) -> list[str]:
    """Open holds past their expiry (left by a process that died mid-call)."""
    rows = await conn.execute(select(holds.c.id).where(holds.c.status == "open", holds.c.expires_at < now)
                              .limit(limit))
    return [r[0] for r in rows]


async def hold_status(conn: AsyncConnection, hold_id: str) -> dict[str, Any] | None:
    """A hold's row."""
    row = (await conn.execute(select(holds).where(holds.c.id == hold_id))).first()
    return dict(row._mapping) if row else None

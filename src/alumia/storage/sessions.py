"""Browser sessions, stored by the SHA-256 of the cookie value."""

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import memberships, orgs, sessions, users


async def insert_session(conn: AsyncConnection, *, id_hash: str, user_id: str, csrf_token: str,
                         now: datetime, expires_at: datetime) -> None:
    """Start a session."""
    await conn.execute(insert(sessions).values(id_hash=id_hash, user_id=user_id, csrf_token=csrf_token,
                                               created_at=now, expires_at=expires_at))


async def session_user(conn: AsyncConnection, id_hash: str, now: datetime) -> dict[str, Any] | None:
    """The live session with this hash and its user."""
    row = (await conn.execute(
        select(sessions.c.user_id, sessions.c.csrf_token, users.c.email)
        .join(users, users.c.id == sessions.c.user_id)
        .where(sessions.c.id_hash == id_hash, sessions.c.expires_at > now))).first()
    return dict(row._mapping) if row else None


async def delete_session(conn: AsyncConnection, id_hash: str) -> None:
    """End a session."""
    await conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash))


async def orgs_of_user(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    """The orgs a user belongs to, with the role, by slug."""
    rows = await conn.execute(select(orgs.c.id, orgs.c.slug, orgs.c.name, memberships.c.role)
                              .join(memberships, memberships.c.org_id == orgs.c.id)
                              .where(memberships.c.user_id == user_id).order_by(orgs.c.slug))
    return [dict(r._mapping) for r in rows]

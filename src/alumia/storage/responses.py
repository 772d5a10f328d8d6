"""Stored Responses (the `stored_responses` table): each row belongs to one org and is read only with it.

A row older than the retention cut-off (`since`, worked out by the caller from the setting) is absent
to every read here, before the sweeper has deleted it.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import stored_responses


async def insert_response(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Store one response: id, org_id, previous_response_id, response and input_items (JSON), created_at."""
    await conn.execute(insert(stored_responses).values(**values))


async def response_of(conn: AsyncConnection, org_id: str, response_id: str,
                      since: datetime) -> dict[str, Any] | None:
    """The org's stored response with this id created after `since`; another org's is None."""
    row = (await conn.execute(select(stored_responses).where(
        stored_responses.c.id == response_id, stored_responses.c.org_id == org_id,
        stored_responses.c.created_at > since))).first()
    return dict(row._mapping) if row else None


async def delete_response(conn: AsyncConnection, org_id: str, response_id: str, since: datetime) -> bool:
    """Delete the org's stored response; whether there was one (still within retention)."""
    result = await conn.execute(delete(stored_responses).where(
        stored_responses.c.id == response_id, stored_responses.c.org_id == org_id,
        stored_responses.c.created_at > since))
    return bool(result.rowcount)


async def delete_older(conn: AsyncConnection, cutoff: datetime) -> int:
    """Delete every stored response created at or before `cutoff`; how many."""
    result = await conn.execute(delete(stored_responses).where(stored_responses.c.created_at <= cutoff))
    return int(result.rowcount or 0)

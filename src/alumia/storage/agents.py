"""Agents: rows scoped to their org; deletion is soft."""

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import agents

DEFAULT_AGENT = {"name": "Ala", "slug": "ala", "description": "The default agent of every org.",
                 "model": "gpt-5.6-luna", "system_prompt": "", "is_active": True, "is_default": True}


async def insert_default_agent(conn: AsyncConnection, agent_id: str, org_id: str, now: datetime) -> None:
    """Ala, created with every org."""
    await insert_agent(conn, {"id": agent_id, "org_id": org_id, **DEFAULT_AGENT, "created_at": now,
                              "updated_at": now})


async def insert_agent(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Store a new agent."""
    await conn.execute(insert(agents).values(**values))


async def list_agents(conn: AsyncConnection, org_id: str) -> list[dict[str, Any]]:
    """The org's agents that are not deleted, the default first, then by name."""
    rows = await conn.execute(select(agents).where(agents.c.org_id == org_id, agents.c.deleted_at.is_(None))
                              .order_by(agents.c.is_default.desc(), agents.c.name))
    return [dict(r._mapping) for r in rows]


async def agent_in_org(conn: AsyncConnection, org_id: str, ref: str) -> dict[str, Any] | None:
    """One of the org's live agents by id or slug (another org's agent is not found)."""
    row = (await conn.execute(select(agents).where(
        agents.c.org_id == org_id, agents.c.deleted_at.is_(None),
        (agents.c.id == ref) | (agents.c.slug == ref)))).first()
    return dict(row._mapping) if row else None


async def update_agent(conn: AsyncConnection, agent_id: str, values: dict[str, Any]) -> None:
    """Change an agent's fields."""
    await conn.execute(update(agents).where(agents.c.id == agent_id).values(**values))


async def slug_taken(conn: AsyncConnection, org_id: str, slug: str) -> bool:
    """Whether the org already has an agent (live or deleted) with this slug."""
    row = await conn.execute(select(agents.c.id).where(agents.c.org_id == org_id, agents.c.slug == slug))
    return row.first() is not None


async def soft_delete(conn: AsyncConnection, agent_id: str, now: datetime) -> None:
    """Mark an agent deleted; its usage keeps pointing at it."""
    await conn.execute(update(agents).where(agents.c.id == agent_id).values(deleted_at=now, is_active=False))

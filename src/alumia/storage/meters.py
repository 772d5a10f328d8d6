"""Meter events (infrastructure usage charged to the balance): rows, look-ups and report sums."""

from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Label, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import agents, meter_events
from alumia.storage.usage import utc_day

_INSERT = insert(meter_events)


async def insert_event(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """Store one accepted meter event (in the transaction of its ledger entry)."""
    await conn.execute(_INSERT, row)


async def event_by_id(conn: AsyncConnection, org_id: str, event_id: str) -> dict[str, Any] | None:
    """The org's meter event with the reporter's id, if any."""
    row = (await conn.execute(select(meter_events).where(
        meter_events.c.org_id == org_id, meter_events.c.event_id == event_id))).first()
    return dict(row._mapping) if row else None


async def agent_belongs_to_org(conn: AsyncConnection, org_id: str, agent_id: str) -> bool:
    """Whether `agent_id` is an agent of the org (a soft-deleted one too: its past work is billable)."""
    row = await conn.execute(select(agents.c.id).where(agents.c.org_id == org_id, agents.c.id == agent_id))
    return row.first() is not None


def _in_range(org_id: str, since: datetime, until: datetime) -> list[ColumnElement[bool]]:
    m = meter_events.c
    return [m.org_id == org_id, m.created_at >= since, m.created_at < until]


def _money() -> list[Label[Any]]:
    m = meter_events.c
    return [func.count().label("meterEventCount"),
            func.coalesce(func.sum(m.charged_microcents), 0).label("serviceChargesMicrocents")]


async def sums_by(conn: AsyncConnection, org_id: str, since: datetime, until: datetime,
                  key: str) -> list[dict[str, Any]]:
    """Service charges and event counts grouped by `key` (agent_id, project_id or service)."""
    column = meter_events.c[key]
    query = (select(column.label("key"), *_money()).where(*_in_range(org_id, since, until))
             .group_by(column))
    return [{"key": row.key, "meterEventCount": int(row.meterEventCount),
             "serviceChargesMicrocents": int(row.serviceChargesMicrocents)}
            for row in (await conn.execute(query)).all()]


async def daily_sums(conn: AsyncConnection, org_id: str, since: datetime,
                     until: datetime) -> list[dict[str, Any]]:
    """Service charges per UTC day of charging; days without events are absent."""
    day = utc_day(conn, meter_events.c.created_at).label("day")
    query = (select(day, *_money()).where(*_in_range(org_id, since, until)).group_by(day))
    return [{"day": date.fromisoformat(str(row.day)), "meterEventCount": int(row.meterEventCount),
             "serviceChargesMicrocents": int(row.serviceChargesMicrocents)}
            for row in (await conn.execute(query)).all()]

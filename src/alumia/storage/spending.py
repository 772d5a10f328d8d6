"""Sums of model calls for the spending reports, and ledger entries in a time range.

Every figure is selected by `created_at` in [since, until): a call's usage record and its
`usage_charge` ledger entry share that instant (services/metering.py), so sums here equal the ledger.
"""

from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Label, RowMapping, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import agents, ledger_entries, usage_records
from alumia.storage.usage import call_counts, utc_day

_GROUP_COLUMNS = {"model": usage_records.c.model, "agent_id": usage_records.c.agent_id}


def _sums() -> list[Label[Any]]:
    u = usage_records.c
    return [
        *call_counts(),
        func.coalesce(func.sum(u.charged_microcents), 0).label("platformChargesMicrocents"),
        func.coalesce(func.sum(case((u.byok, u.cost_microcents), else_=0)), 0).label("byokValueMicrocents"),
    ]


def _in_range(org_id: str, since: datetime, until: datetime) -> list[ColumnElement[bool]]:
    u = usage_records.c
    return [u.org_id == org_id, u.created_at >= since, u.created_at < until]


def _ints(row: RowMapping, skip: tuple[str, ...]) -> dict[str, Any]:
    # PostgreSQL sums bigints as numeric: every figure back to int.
    return {k: v if k in skip else int(v) for k, v in row.items()}


async def call_sums_by(conn: AsyncConnection, org_id: str, since: datetime, until: datetime,
                       key: str) -> list[dict[str, Any]]:
    """Model-call sums grouped by `key` ("model" or "agent_id"), each row's group under "key"."""
    column = _GROUP_COLUMNS[key]
    query = select(column.label("key"), *_sums()).where(*_in_range(org_id, since, until)).group_by(column)
    return [_ints(row._mapping, ("key",)) for row in (await conn.execute(query)).all()]


async def call_totals(conn: AsyncConnection, org_id: str, since: datetime, until: datetime) -> dict[str, Any]:
    """Model-call sums over the whole range."""
    row = (await conn.execute(select(*_sums()).where(*_in_range(org_id, since, until)))).one()
    return _ints(row._mapping, ())


async def call_daily_sums(conn: AsyncConnection, org_id: str, since: datetime,
                          until: datetime) -> list[dict[str, Any]]:
    """Model-call sums per UTC day; days without calls are absent."""
    day = utc_day(conn, usage_records.c.created_at).label("day")
    query = select(day, *_sums()).where(*_in_range(org_id, since, until)).group_by(day)
    return [{**_ints(row._mapping, ("day",)), "day": date.fromisoformat(str(row.day))}
            for row in (await conn.execute(query)).all()]


async def agent_names(conn: AsyncConnection, org_id: str, agent_ids: list[str]) -> dict[str, str]:
    """Names of the org's agents (deleted ones too) by id."""
    if not agent_ids:
        return {}
    rows = await conn.execute(select(agents.c.id, agents.c.name).where(
        agents.c.org_id == org_id, agents.c.id.in_(agent_ids)))
    return {r.id: r.name for r in rows}


async def ledger_in_range(conn: AsyncConnection, org_id: str, since: datetime,
                          until: datetime) -> list[dict[str, Any]]:
    """The org's ledger entries created in [since, until), oldest first."""
    e = ledger_entries.c
    rows = await conn.execute(select(ledger_entries).where(
        e.org_id == org_id, e.created_at >= since, e.created_at < until).order_by(e.id))
    return [dict(r._mapping) for r in rows]

"""Usage records (one per model call) and the sums the billing page shows."""

from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Label, case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import usage_records

_INSERT = insert(usage_records)


async def insert_record(conn: AsyncConnection, record: dict[str, Any]) -> None:
    """Store one call's usage record (one statement, compiled once and cached)."""
    await conn.execute(_INSERT, record)


def call_counts() -> list[Label[Any]]:
    """Request and token sums of usage records, as labelled columns (reports add their money columns)."""
    u = usage_records.c
    return [
        func.count().label("requestCount"),
        func.coalesce(func.sum(case((u.byok, 1), else_=0)), 0).label("byokRequestCount"),
        func.coalesce(func.sum(u.input_tokens), 0).label("inputTokens"),
        func.coalesce(func.sum(u.output_tokens), 0).label("outputTokens"),
        func.coalesce(func.sum(u.cache_read_tokens), 0).label("cacheReadTokens"),
        func.coalesce(func.sum(u.cache_write_tokens), 0).label("cacheWriteTokens"),
    ]


def _sums() -> list[Label[Any]]:
    u = usage_records.c
    return [
        *call_counts(),
        func.coalesce(func.sum(u.cost_microcents), 0).label("providerCostMicrocents"),
        func.coalesce(func.sum(case((u.byok, u.cost_microcents), else_=0)), 0).label("byokCostMicrocents"),
        func.coalesce(func.sum(u.fee_microcents), 0).label("feeMicrocents"),
        func.coalesce(func.sum(u.charged_microcents), 0).label("spentMicrocents"),
    ]


async def totals(conn: AsyncConnection, org_id: str, since: datetime | None) -> dict[str, int]:
    """Token, money and request sums of an org's calls since a time (all time when None)."""
    u = usage_records.c
    query = select(*_sums()).where(u.org_id == org_id)
    if since is not None:
        query = query.where(u.created_at >= since)
    row = (await conn.execute(query)).one()
    return {key: int(value) for key, value in row._mapping.items()}


async def record_by_id(conn: AsyncConnection, org_id: str, request_id: str) -> dict[str, Any] | None:
    """One of the org's usage records by request id."""
    row = (await conn.execute(select(usage_records).where(
        usage_records.c.org_id == org_id, usage_records.c.id == request_id))).first()
    return dict(row._mapping) if row else None


def utc_day(conn: AsyncConnection, created: ColumnElement[datetime]) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column, as each backend spells it.

    SQLite stores the UTC wall time as text, so date() reads its day; PostgreSQL stores an instant,
    which is turned into UTC wall time first (date() alone would use the session's time zone).
    """
    if conn.dialect.name == "postgresql":
        return func.date(func.timezone("UTC", created))
    return func.date(created)


async def daily_series(conn: AsyncConnection, org_id: str, since: datetime) -> list[dict[str, Any]]:
    """Per UTC day with calls since `since`, oldest first: the balance charged and the BYOK calls' list price.

    Days without calls are absent; the service fills them in.
    """
    u = usage_records.c
    day = utc_day(conn, u.created_at).label("day")
    query = (select(day,
                    func.coalesce(func.sum(u.charged_microcents), 0).label("chargedMicrocents"),
                    func.coalesce(func.sum(case((u.byok, u.cost_microcents), else_=0)), 0)
                    .label("byokCostMicrocents"),
                    func.count().label("requestCount"),
                    func.coalesce(func.sum(case((u.byok, 1), else_=0)), 0).label("byokRequestCount"))
             .where(u.org_id == org_id, u.created_at >= since)
             .group_by(day).order_by(day))
    rows = (await conn.execute(query)).all()
    # SQLite answers the day as 'YYYY-MM-DD' text, PostgreSQL as a date; sums as numeric on PostgreSQL.
    return [{"day": date.fromisoformat(str(row.day)),
             **{k: int(v) for k, v in row._mapping.items() if k != "day"}} for row in rows]

"""Spending reports over a range of UTC days, and the CSV export of the ledger.

Every report separates three money columns, integer microcents:

- `platformChargesMicrocents`: what platform-routed model calls charged the balance (token cost + fee);
- `byokValueMicrocents`: the list-price value of BYOK calls (billed by the provider, not by us);
- `serviceChargesMicrocents`: infrastructure meter charges (storage, browser sessions, sandboxes,
  collaboration);

and `spentMicrocents` = platform + service charges: what the balance paid. Counts: `requestCount`,
`byokRequestCount`, token sums, `meterEventCount`.

Range: `from` and `to` are inclusive `YYYY-MM-DD` UTC days; `to` defaults to today and `from` to the
first day of `to`'s month (so no parameters = this month); at most 366 days; anything else is 422.
Everything is selected by the time it was charged (`created_at`), the same instant as its ledger
entry, so `platformCharges + serviceCharges` over a range equals minus the sum of the range's
`usage_charge` and `service_charge` ledger entries, to the microcent.

In `/by-model` the row with `model: null` carries the service charges (they have no model); in
`/by-project` model calls sit under `projectId: null` (calls have no project); in `/by-agent` calls
and events for no agent sit under `agentId: null`. So each report's items add up to its totals.

The CSV export (`GET /api/v1/billing/transactions.csv?from=&to=`) lists the ledger entries of the
range, oldest first, with a header row: id, createdAt, type, amountMicrocents, amountUsd (exact
decimal), balanceAfterMicrocents, description, requestId. Text cells starting with = + - @ are
prefixed with ' so that spreadsheets do not run them as formulas.
"""

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from alumia.clock import iso, utcnow
from alumia.errors import AppError, ErrorCode
from alumia.services.accounts import Principal
from alumia.storage import meters, spending
from alumia.storage.db import Database

MAX_DAYS = 366
TOP = 5
_CALL_FIELDS = ("requestCount", "byokRequestCount", "inputTokens", "outputTokens", "cacheReadTokens",
                "cacheWriteTokens", "platformChargesMicrocents", "byokValueMicrocents")
_METER_FIELDS = ("meterEventCount", "serviceChargesMicrocents")
CSV_COLUMNS = ("id", "createdAt", "type", "amountMicrocents", "amountUsd", "balanceAfterMicrocents",
               "description", "requestId")


@dataclass(frozen=True, slots=True)
class DateRange:
    """Inclusive UTC days."""

    first: date
    last: date

    @property
    def since(self) -> datetime:
        """The first instant of the range."""
        return datetime(self.first.year, self.first.month, self.first.day, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        """The first instant after the range."""
        after = self.last + timedelta(days=1)
        return datetime(after.year, after.month, after.day, tzinfo=UTC)

    def days(self) -> list[date]:
        """Every day of the range, oldest first."""
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def json(self) -> dict[str, Any]:
        """The range as the reports echo it."""
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError as exc:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"{name} must be a date as YYYY-MM-DD") from exc


def parse_range(from_: str | None, to: str | None, today: date | None = None) -> DateRange:
    """The report range from the query; 422 for bad dates, from after to, or more than 366 days."""
    last = _day(to, "to") or (today or utcnow().date())
    first = _day(from_, "from") or last.replace(day=1)
    if first > last:
        raise AppError(ErrorCode.VALIDATION_ERROR, "from must not be after to")
    if (last - first).days + 1 > MAX_DAYS:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"a report covers at most {MAX_DAYS} days")
    return DateRange(first, last)


def _row(calls: dict[str, Any] | None = None, meter: dict[str, Any] | None = None) -> dict[str, Any]:
    calls, meter = calls or {}, meter or {}
    row = {f: int(calls.get(f, 0)) for f in _CALL_FIELDS} | {f: int(meter.get(f, 0)) for f in _METER_FIELDS}
    row["spentMicrocents"] = row["platformChargesMicrocents"] + row["serviceChargesMicrocents"]
    return row


def _add(total: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    return {k: total.get(k, 0) + v for k, v in row.items()}


def _merge(call_rows: list[dict[str, Any]], meter_rows: list[dict[str, Any]]) -> dict[object, dict[str, Any]]:
    calls = {r["key"]: r for r in call_rows}
    meter = {r["key"]: r for r in meter_rows}
    return {key: _row(calls.get(key), meter.get(key)) for key in calls.keys() | meter.keys()}


def _ordered(items: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return sorted(items, key=lambda i: (-i["spentMicrocents"], -i["byokValueMicrocents"],
                                        -i["requestCount"], str(i[name])))


def _totals(items: list[dict[str, Any]]) -> dict[str, Any]:
    total = _row()
    for item in items:
        total = _add(total, {k: item[k] for k in total})
    return total


async def _grouped(db: Database, principal: Principal, span: DateRange, *, call_key: str | None,
                   meter_key: str, name: str) -> list[dict[str, Any]]:
    """Items keyed by `name`: call sums grouped by `call_key` (None: all calls under null) merged with
    meter sums grouped by `meter_key`."""
    org, since, until = principal.org_id, span.since, span.until
    async with db.read() as conn:
        if call_key is None:
            whole = await spending.call_totals(conn, org, since, until)
            call_rows = [{"key": None, **whole}] if whole["requestCount"] else []
        else:
            call_rows = await spending.call_sums_by(conn, org, since, until, call_key)
        meter_rows = await meters.sums_by(conn, org, since, until, meter_key)
    merged = _merge(call_rows, meter_rows)
    return _ordered([{name: key, **row} for key, row in merged.items()], name)


async def _meter_by_none(db: Database, principal: Principal, span: DateRange) -> list[dict[str, Any]]:
    async with db.read() as conn:
        total = await meters.sums_by(conn, principal.org_id, span.since, span.until, "org_id")
    return [{**r, "key": None} for r in total]


async def by_model(db: Database, principal: Principal, span: DateRange) -> dict[str, Any]:
    """Per model; service charges under `model: null`."""
    async with db.read() as conn:
        call_rows = await spending.call_sums_by(conn, principal.org_id, span.since, span.until, "model")
    merged = _merge(call_rows, await _meter_by_none(db, principal, span))
    items = _ordered([{"model": key, **row} for key, row in merged.items()], "model")
    return {**span.json(), "currency": "USD", "totals": _totals(items), "items": items}


async def by_agent(db: Database, principal: Principal, span: DateRange) -> dict[str, Any]:
    """Per agent (null: no agent), with the agent's name."""
    items = await _grouped(db, principal, span, call_key="agent_id", meter_key="agent_id", name="agentId")
    async with db.read() as conn:
        names = await spending.agent_names(conn, principal.org_id,
                                           [i["agentId"] for i in items if i["agentId"]])
    items = [{"agentId": i["agentId"], "agentName": names.get(i["agentId"]) if i["agentId"] else None,
              **{k: v for k, v in i.items() if k != "agentId"}} for i in items]
    return {**span.json(), "currency": "USD", "totals": _totals(items), "items": items}


async def by_project(db: Database, principal: Principal, span: DateRange) -> dict[str, Any]:
    """Per project of the meter events; model calls under `projectId: null`."""
    items = await _grouped(db, principal, span, call_key=None, meter_key="project_id", name="projectId")
    return {**span.json(), "currency": "USD", "totals": _totals(items), "items": items}


async def overview(db: Database, principal: Principal, span: DateRange) -> dict[str, Any]:
    """The daily series (every day, zeros filled), totals, service breakdown, top models and agents."""
    org, since, until = principal.org_id, span.since, span.until
    async with db.read() as conn:
        call_days = {r["day"]: r for r in await spending.call_daily_sums(conn, org, since, until)}
        meter_days = {r["day"]: r for r in await meters.daily_sums(conn, org, since, until)}
        services = await meters.sums_by(conn, org, since, until, "service")
    daily = [{"date": day.isoformat(), **_row(call_days.get(day), meter_days.get(day))}
             for day in span.days()]
    models = (await by_model(db, principal, span))["items"]
    agents = (await by_agent(db, principal, span))["items"]
    return {**span.json(), "currency": "USD", "totals": _totals(daily), "daily": daily,
            "byService": sorted(({"service": r["key"], **{f: r[f] for f in _METER_FIELDS}} for r in services),
                                key=lambda r: (-r["serviceChargesMicrocents"], r["service"])),
            "topModels": [m for m in models if m["model"] is not None][:TOP],
            "topAgents": agents[:TOP]}


def _safe_text(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value[0] in "=+-@\t\r" else value


def _usd(microcents: int) -> str:
    return format(Decimal(microcents).scaleb(-6), "f")


async def transactions_csv(db: Database, principal: Principal, span: DateRange) -> str:
    """The range's ledger entries as CSV text with a header row, oldest first."""
    async with db.read() as conn:
        rows = await spending.ledger_in_range(conn, principal.org_id, span.since, span.until)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r["id"], iso(r["created_at"]), r["type"], r["amount_microcents"],
                         _usd(r["amount_microcents"]), r["balance_after_microcents"],
                         _safe_text(r["description"]), _safe_text(r["request_id"])])
    return out.getvalue()

"""Infrastructure meter events: validate, price, and charge each event id exactly once.

`POST /api/v1/billing/usage-events` is for the platform's own services, reporting with an API key
that holds the `billing:meter` scope (`alumia apikey create --org S --scope billing:meter`); an
org's ordinary keys are refused (403).

Rules (docs/product.md "Money"; docs/design.md "Rules that do not bend"):

- The charge is `service_charge(service, quantity, settings.service_prices)`
  (domain/services_pricing.py), whatever BYOK keys the org has, with no platform fee. It is written
  as a `service_charge` ledger entry (negative, idempotency key `meter:<org id>:<event id>`) in one
  transaction with the `meter_events` row. A charge that rounds to 0 microcents stores the event
  and writes no ledger entry.
- Meter charges are never refused for balance: they pay for work already done. They may take the
  balance below zero; platform-routed model calls are then refused (402) until a deposit.
- Idempotency by event id, per org. The body's meaning (service, quantity as an exact decimal,
  occurredAt as an instant, agentId, projectId) is hashed with SHA-256; unknown fields are ignored
  and take no part. The same id with the same meaning answers 200 with the original result and
  charges nothing more (also for concurrent duplicates: the unique ledger key decides); the same id
  with a different meaning is 409 CONFLICT. A replay is answered before the time-window check, so a
  retry of an accepted event stays 200.
- A new event's `occurredAt` must be an ISO-8601 time with a zone, not older than 35 days and not
  more than 5 minutes in the future. Unknown service, quantity not > 0 (or more than 6 decimals, or
  above 10^9), an agentId that is not an agent of the org (soft-deleted agents count), or a
  projectId that is not 1-100 characters → 422.
- Service charges are reported on the UTC day they were charged (received), like the ledger entry.
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError

from alumia.clock import iso, utcnow
from alumia.config import Settings
from alumia.domain.services_pricing import SERVICES, UNITS, parse_quantity, quantity_text, service_charge
from alumia.errors import AppError, ErrorCode
from alumia.services.accounts import Principal
from alumia.services.auto_topup import AutoTopUp
from alumia.storage import accounts, ledger, meters
from alumia.storage.db import Database
from alumia.storage.ledger import NewEntry

METER_SCOPE = "billing:meter"
MAX_AGE = timedelta(days=35)
FUTURE_SKEW = timedelta(minutes=5)
_EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
# A quantity sent as a string: plain ASCII digits, an optional fraction, nothing else (no spaces, signs,
# exponents, underscores or other scripts' digits, all of which Decimal would accept).
_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?", re.ASCII)


@dataclass(frozen=True, slots=True)
class MeterEvent:
    """A usage event whose shape has been checked."""

    event_id: str
    service: str
    quantity: Decimal
    occurred_at: datetime
    agent_id: str | None
    project_id: str | None

    @property
    def payload_sha256(self) -> str:
        """SHA-256 of the event's canonical meaning: what decides "same body" for a repeated id."""
        canonical = orjson.dumps({
            "id": self.event_id, "service": self.service, "quantity": quantity_text(self.quantity),
            "occurredAt": self.occurred_at.isoformat(), "agentId": self.agent_id,
            "projectId": self.project_id}, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()


def _invalid(message: str) -> AppError:
    return AppError(ErrorCode.VALIDATION_ERROR, message)


def _optional_text(body: dict[str, Any], field: str, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise _invalid(f"{field} must be a string of 1-{limit} characters, or absent")
    return value


def _quantity(value: object) -> Decimal:
    if isinstance(value, float):  # a JSON number with a fraction: its shortest decimal text
        value = repr(value)
    elif isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(value):
        raise _invalid("quantity must be a JSON number or a string of digits with an optional "
                       "fraction, like \"12.5\"")
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _invalid("quantity must be a decimal number (JSON number or string)")
    try:
        return parse_quantity(value)
    except ValueError as exc:
        raise _invalid(str(exc)) from exc


def _occurred_at(value: object) -> datetime:
    if not isinstance(value, str):
        raise _invalid("occurredAt must be an ISO-8601 time with a zone, e.g. 2026-01-31T12:00:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _invalid("occurredAt must be an ISO-8601 time with a zone") from exc
    if parsed.tzinfo is None:
        raise _invalid("occurredAt must carry a time zone (Z or ±hh:mm)")
    return parsed.astimezone(UTC)


def parse_event(body: dict[str, Any]) -> MeterEvent:
    """Check a usage event's shape (not the time window or the agent: those need now and the org)."""
    event_id = body.get("id")
    if not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
        raise _invalid("id must be 1-100 characters of letters, digits, '.', '_', ':' or '-'")
    service = body.get("service")
    if service not in SERVICES:
        raise _invalid(f"service must be one of {', '.join(SERVICES)}")
    return MeterEvent(event_id=event_id, service=service, quantity=_quantity(body.get("quantity")),
                      occurred_at=_occurred_at(body.get("occurredAt")),
                      agent_id=_optional_text(body, "agentId", 36),
                      project_id=_optional_text(body, "projectId", 100))


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    """A stored meter event as the API answers it."""
    return {"id": row["event_id"], "service": row["service"], "quantity": row["quantity"],
            "unit": UNITS[row["service"]], "unitPriceMicrocents": row["unit_price_microcents"],
            "chargedMicrocents": row["charged_microcents"], "occurredAt": iso(row["occurred_at"]),
            "agentId": row["agent_id"], "projectId": row["project_id"], "createdAt": iso(row["created_at"])}


def _replay(row: dict[str, Any], event: MeterEvent) -> tuple[dict[str, Any], int]:
    if row["payload_sha256"] != event.payload_sha256:
        raise AppError(ErrorCode.CONFLICT,
                       f"usage event {event.event_id!r} was already recorded with a different body")
    return event_json(row), 200


async def record_event(db: Database, settings: Settings, principal: Principal, body: dict[str, Any],
                       top_up: AutoTopUp) -> tuple[dict[str, Any], int]:
    """Charge a usage event once; (event JSON, 201) when new, (original JSON, 200) for a replay.

    A charge that takes the balance below the org's auto top-up threshold starts a top-up.
    """
    if METER_SCOPE not in principal.scopes:
        raise AppError(ErrorCode.FORBIDDEN, f"usage events need an API key with the {METER_SCOPE} scope")
    event = parse_event(body)
    prices = settings.service_prices
    charge = service_charge(event.service, event.quantity, prices)
    now = utcnow()
    try:
        async with db.write() as conn:
            existing = await meters.event_by_id(conn, principal.org_id, event.event_id)
            if existing is not None:
                return _replay(existing, event)
            if event.occurred_at < now - MAX_AGE:
                raise _invalid("occurredAt is more than 35 days ago")
            if event.occurred_at > now + FUTURE_SKEW:
                raise _invalid("occurredAt is in the future")
            if event.agent_id is not None and not await meters.agent_belongs_to_org(
                    conn, principal.org_id, event.agent_id):
                raise _invalid("agentId is not an agent of this org")
            row = {"org_id": principal.org_id, "event_id": event.event_id, "service": event.service,
                   "quantity": quantity_text(event.quantity),
                   "unit_price_microcents": prices.unit_price(event.service), "charged_microcents": charge,
                   "occurred_at": event.occurred_at, "agent_id": event.agent_id,
                   "project_id": event.project_id, "payload_sha256": event.payload_sha256,
                   "api_key_id": principal.api_key_id, "created_at": now}
            balance_after = None
            if charge:
                balance_after = await ledger.append(conn, NewEntry(
                    org_id=principal.org_id, type="service_charge", amount_microcents=-charge,
                    description=f"{event.service} ({row['quantity']} {UNITS[event.service]})",
                    idempotency_key=f"meter:{principal.org_id}:{event.event_id}"), now)
            await meters.insert_event(conn, row)
    except IntegrityError:
        # A concurrent request with the same id committed first: answer as its replay.
        async with db.read() as conn:
            existing = await meters.event_by_id(conn, principal.org_id, event.event_id)
        if existing is None:
            raise
        return _replay(existing, event)
    if balance_after is not None:
        async with db.read() as conn:
            org = await accounts.org_by_id(conn, principal.org_id)
        if org is not None and org["auto_topup_enabled"]:
            top_up.after_charge(principal.org_id, balance_after, org["auto_topup_threshold_cents"])
    return event_json(row), 201

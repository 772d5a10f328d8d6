"""The billing snapshot, transactions, pricing and direct deposits."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError

from alumia.clock import iso, utcnow
from alumia.config import Settings
from alumia.domain.catalog import Catalog, Prices
from alumia.domain.money import MICROCENTS_PER_CENT, cents_to_microcents, microcents_to_cents_floor
from alumia.domain.permissions import Permission
from alumia.domain.pricing import FeePolicy
from alumia.domain.services_pricing import HOURS_PER_MONTH, SERVICES, UNITS, ServicePrices
from alumia.errors import AppError, ErrorCode
from alumia.services.accounts import Principal
from alumia.storage import accounts, ledger, usage
from alumia.storage.db import Database
from alumia.storage.ledger import NewEntry

MAX_DIRECT_DEPOSIT_CENTS = 1_000_000  # $10,000: a typo guard on the non-production shortcut


def transaction_json(row: dict[str, Any]) -> dict[str, Any]:
    """A ledger entry as the API shows it (a transaction)."""
    return {
        "id": row["id"],
        "type": row["type"],
        "amountMicrocents": row["amount_microcents"],
        "balanceAfterMicrocents": row["balance_after_microcents"],
        "description": row["description"],
        "requestId": row["request_id"],
        "createdAt": iso(row["created_at"]),
    }


def month_start(now: datetime) -> datetime:
    """The first instant of now's calendar month, UTC."""
    return datetime(now.year, now.month, 1, tzinfo=UTC)


async def snapshot(db: Database, settings: Settings, principal: Principal) -> dict[str, Any]:
    """Balance, waiver, payment options, this month's and all-time usage, recent transactions."""
    policy = FeePolicy(settings.fee_bps, settings.waiver_threshold_cents)
    now = utcnow()
    async with db.read() as conn:
        org = await accounts.org_by_id(conn, principal.org_id)
        assert org is not None
        current = await usage.totals(conn, principal.org_id, month_start(now))
        all_time = await usage.totals(conn, principal.org_id, None)
        recent = await ledger.list_entries(conn, principal.org_id, before_id=None, limit=10)
    deposits = org["cumulative_deposits_cents"]
    return {
        "balance": {
            "balanceCents": microcents_to_cents_floor(org["balance_microcents"]),
            "balanceMicrocents": org["balance_microcents"],
            "cumulativeDepositsCents": deposits,
            "autoTopupEnabled": org["auto_topup_enabled"],
            "autoTopupThresholdCents": org["auto_topup_threshold_cents"],
            "autoTopupAmountCents": org["auto_topup_amount_cents"],
        },
        "waiver": {"active": not policy.fee_applies(deposits),
                   "remainingCents": policy.waiver_remaining_cents(deposits)},
        "payment": {"stripeConfigured": settings.stripe_configured,
                    "webhookConfigured": settings.stripe_webhook_configured,
                    # With Stripe configured, deposits go through Checkout; direct ones never in production.
                    "directDepositAvailable": not settings.is_production and not settings.stripe_configured,
                    "billingEnforced": True},
        "usage": {"currentMonth": current, "allTime": all_time},
        "recentTransactions": [transaction_json(r) for r in recent],
    }


async def transactions(db: Database, principal: Principal, *, cursor: int | None,
                       limit: int) -> dict[str, Any]:
    """Ledger entries, newest first; nextCursor continues after the last one."""
    async with db.read() as conn:
        rows = await ledger.list_entries(conn, principal.org_id, before_id=cursor, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    return {"items": [transaction_json(r) for r in page], "limit": limit, "hasMore": more,
            "nextCursor": str(page[-1]["id"]) if more else None}


@dataclass(frozen=True, slots=True)
class DirectDeposit:
    """A direct deposit's answer, and whether this call only replayed an earlier one with its key."""

    body: dict[str, Any]
    replayed: bool


def _deposit_body(entry: dict[str, Any]) -> dict[str, Any]:
    """What a direct deposit answers, built from its ledger entry alone, so a replay answers the same."""
    balance_after = entry["balance_after_microcents"]
    return {"amountCents": entry["amount_microcents"] // MICROCENTS_PER_CENT,
            "balanceMicrocents": balance_after, "balanceCents": microcents_to_cents_floor(balance_after),
            "transaction": transaction_json(entry)}


async def deposit_direct_replayable(db: Database, settings: Settings, *, org_id: str, amount_cents: int,
                                    idempotency_key: str,
                                    description: str = "Direct deposit") -> DirectDeposit:
    """Credit a deposit without a payment provider (outside production only), once per idempotency key.

    The same key with the same amount again credits nothing and answers exactly what the first call
    answered; the same key with another amount is a CONFLICT (same id, different payload).
    The amount is the whole payload: it is the only thing the request asks for. Concurrent calls with one
    key race on the ledger's unique idempotency key: one inserts, the others' transactions roll back whole
    and answer from the entry the winner committed.
    """
    if settings.is_production or settings.stripe_configured:
        raise AppError(ErrorCode.FORBIDDEN, "direct deposits are not available here; deposits go through "
                       "Stripe Checkout")
    if not 1 <= amount_cents <= MAX_DIRECT_DEPOSIT_CENTS:
        raise AppError(ErrorCode.VALIDATION_ERROR,
                       f"amountCents must be between 1 and {MAX_DIRECT_DEPOSIT_CENTS}")
    key = f"deposit:direct:{org_id}:{idempotency_key}"
    async with db.read() as conn:  # a replay needs no write lock
        entry = await ledger.entry_by_key(conn, key)
    replayed = entry is not None
    if entry is None:
        try:
            async with db.write() as conn:
                # Checked again under the write lock: on SQLite another writer may have committed since.
                entry = await ledger.entry_by_key(conn, key)
                replayed = entry is not None
                if entry is None:
                    await ledger.append(conn, NewEntry(
                        org_id=org_id, type="deposit", amount_microcents=cents_to_microcents(amount_cents),
                        description=description, idempotency_key=key), utcnow(),
                        cumulative_deposit_cents=amount_cents)
                    entry = await ledger.entry_by_key(conn, key)
        except IntegrityError:
            # PostgreSQL: a concurrent call with this key committed its entry first.
            async with db.read() as conn:
                entry = await ledger.entry_by_key(conn, key)
            if entry is None:
                raise
            replayed = True
    assert entry is not None
    if entry["type"] != "deposit" or entry["amount_microcents"] != cents_to_microcents(amount_cents):
        raise AppError(ErrorCode.CONFLICT, "this Idempotency-Key was already used for a different deposit")
    return DirectDeposit(_deposit_body(entry), replayed)


async def deposit_direct(db: Database, settings: Settings, *, org_id: str, amount_cents: int,
                         idempotency_key: str, description: str = "Direct deposit") -> dict[str, Any]:
    """As `deposit_direct_replayable`, but a replay is a CONFLICT (credited once either way).

    For callers that tell a person "already credited" (the dashboard's double submit, the CLI).
    """
    result = await deposit_direct_replayable(db, settings, org_id=org_id, amount_cents=amount_cents,
                                             idempotency_key=idempotency_key, description=description)
    if result.replayed:
        raise AppError(ErrorCode.CONFLICT, "this deposit was already credited")
    return result.body


async def deposit_for_slug(db: Database, settings: Settings, *, org_slug: str, amount_cents: int,
                           idempotency_key: str) -> dict[str, Any]:
    """The CLI's deposit: by org slug."""
    async with db.read() as conn:
        org = await accounts.org_by_slug(conn, org_slug)
    if org is None:
        raise AppError(ErrorCode.NOT_FOUND, f"no org {org_slug!r}")
    return {"org": org_slug, **await deposit_direct(db, settings, org_id=org["id"],
                                                    amount_cents=amount_cents,
                                                    idempotency_key=idempotency_key)}


def _usd(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _prices_json(prices: Prices) -> dict[str, Any]:
    return {"input": _usd(prices.input), "output": _usd(prices.output),
            "cachedInput": _usd(prices.cached_input), "cacheWrite": _usd(prices.cache_write)}


def service_prices_json(prices: ServicePrices) -> list[dict[str, Any]]:
    """Infrastructure prices per metered unit, exact USD text and microcents; no platform fee applies.

    Storage also shows its GB-month equivalent (730 hours).
    """
    items = []
    for service in SERVICES:
        unit_price = prices.unit_price(service)
        item = {"service": service, "unit": UNITS[service], "usd": _usd(Decimal(unit_price).scaleb(-6)),
                "microcents": unit_price}
        if service == "storage":
            per_month = unit_price * HOURS_PER_MONTH
            item["perGbMonth"] = {"usd": _usd(Decimal(per_month).scaleb(-6)), "microcents": per_month,
                                  "hoursPerMonth": HOURS_PER_MONTH}
        items.append(item)
    return items


def pricing(catalog: Catalog, settings: Settings) -> dict[str, Any]:
    """Every model's list prices and the prices with the platform fee applied, USD per million tokens."""
    factor = 1 + Decimal(settings.fee_bps) / 10_000
    models = []
    for model in catalog.models.values():
        p = model.prices
        with_fee = Prices(p.input * factor, p.output * factor, p.cached_input * factor,
                          p.cache_write * factor)
        models.append({"id": model.id, "provider": model.provider,
                       "free": catalog.providers[model.provider].free,
                       "prices": _prices_json(p), "pricesWithFee": _prices_json(with_fee)})
    return {"models": models, "feeBps": settings.fee_bps,
            "waiverThresholdCents": settings.waiver_threshold_cents, "currency": "USD",
            "unit": "per 1M tokens", "servicePrices": service_prices_json(settings.service_prices)}


async def daily_spend(db: Database, principal: Principal, days: int = 30) -> list[dict[str, Any]]:
    """The last `days` UTC days, oldest first and today last, each with what the balance was charged
    and the list-price value of the day's BYOK calls (what the providers bill the org directly).

    Every day is present: a day without calls has zeros.
    """
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    async with db.read() as conn:
        found = {row["day"]: row for row in await usage.daily_series(conn, principal.org_id, since)}
    series = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = found.get(day, {})
        series.append({"date": day.isoformat(),
                       "chargedMicrocents": row.get("chargedMicrocents", 0),
                       "byokCostMicrocents": row.get("byokCostMicrocents", 0),
                       "requestCount": row.get("requestCount", 0),
                       "byokRequestCount": row.get("byokRequestCount", 0)})
    return series


async def deposit(db: Database, settings: Settings, principal: Principal, *, amount_cents: int,
                  idempotency_key: str) -> dict[str, Any]:
    """A signed-in person's direct deposit: needs billing-manage, then as `deposit_direct`."""
    principal.require(Permission.MANAGE_BILLING, "depositing")
    return await deposit_direct(db, settings, org_id=principal.org_id, amount_cents=amount_cents,
                                idempotency_key=idempotency_key)

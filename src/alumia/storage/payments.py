"""Stripe payments, received webhook events and refunds, read and written in the caller's transaction."""

from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.domain.money import MICROCENTS_PER_CENT
from alumia.storage.tables import orgs, stripe_events, stripe_payments, stripe_refunds


async def insert_payment(conn: AsyncConnection, *, session_id: str, org_id: str, amount_cents: int,
                         currency: str, now: datetime) -> None:
    """Record a Checkout Session waiting for its payment (IntegrityError if the id is known)."""
    await conn.execute(insert(stripe_payments).values(
        id=session_id, org_id=org_id, amount_cents=amount_cents, currency=currency, status="pending",
        created_at=now, updated_at=now))


async def payment_by_session(conn: AsyncConnection, session_id: str, *,
                             lock: bool = False) -> dict[str, Any] | None:
    """The payment of a Checkout Session, or None; `lock` holds its row to the end of the transaction
    (SELECT ... FOR UPDATE on PostgreSQL; SQLite's one writer already serializes)."""
    query = select(stripe_payments).where(stripe_payments.c.id == session_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    return dict(row._mapping) if row else None


async def payment_by_intent(conn: AsyncConnection, payment_intent_id: str, *,
                            lock: bool = False) -> dict[str, Any] | None:
    """The payment behind a PaymentIntent, or None; `lock` as in `payment_by_session`."""
    query = select(stripe_payments).where(stripe_payments.c.payment_intent_id == payment_intent_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    return dict(row._mapping) if row else None


async def claim_paid(conn: AsyncConnection, session_id: str, *, payment_intent_id: str | None,
                     paid_cents: int, now: datetime) -> bool:
    """Move a pending payment to paid; False when it was not pending (another delivery got there first).

    The conditional UPDATE is the guard: on PostgreSQL a concurrent transaction waits on the row and
    then finds it no longer pending.
    """
    result = await conn.execute(
        update(stripe_payments)
        .where(stripe_payments.c.id == session_id, stripe_payments.c.status == "pending")
        .values(status="paid", payment_intent_id=payment_intent_id, paid_cents=paid_cents, updated_at=now))
    return result.rowcount == 1


async def set_status(conn: AsyncConnection, session_id: str, status: str, now: datetime) -> None:
    """Set a payment's status (e.g. mismatch, for a person to look at)."""
    await conn.execute(update(stripe_payments).where(stripe_payments.c.id == session_id)
                       .values(status=status, updated_at=now))


async def close_pending(conn: AsyncConnection, session_id: str, status: str, now: datetime) -> bool:
    """Move a pending payment to a final unpaid status (expired, failed); False when it was not pending.

    Conditional like `claim_paid`: of a completion and an expiry racing on one session, one wins.
    """
    result = await conn.execute(
        update(stripe_payments)
        .where(stripe_payments.c.id == session_id, stripe_payments.c.status == "pending")
        .values(status=status, updated_at=now))
    return result.rowcount == 1


async def list_payments(conn: AsyncConnection, org_id: str, *, offset: int,
                        limit: int) -> list[dict[str, Any]]:
    """An org's Stripe payments (Checkout deposits and auto top-ups), newest first."""
    rows = await conn.execute(
        select(stripe_payments).where(stripe_payments.c.org_id == org_id)
        .order_by(stripe_payments.c.created_at.desc(), stripe_payments.c.id.desc())
        .offset(offset).limit(limit))
    return [dict(r._mapping) for r in rows]


async def add_refunded(conn: AsyncConnection, session_id: str, cents: int, now: datetime) -> bool:
    """Count `cents` more as refunded, never past what was paid; False if that would exceed it."""
    result = await conn.execute(
        update(stripe_payments)
        .where(stripe_payments.c.id == session_id,
               stripe_payments.c.refunded_cents + cents <= stripe_payments.c.paid_cents)
        .values(refunded_cents=stripe_payments.c.refunded_cents + cents, updated_at=now))
    return result.rowcount == 1


async def subtract_refunded(conn: AsyncConnection, session_id: str, cents: int, now: datetime) -> bool:
    """Count `cents` less as refunded (a refund that failed), never below zero; False if it would be."""
    result = await conn.execute(
        update(stripe_payments)
        .where(stripe_payments.c.id == session_id, stripe_payments.c.refunded_cents >= cents)
        .values(refunded_cents=stripe_payments.c.refunded_cents - cents, updated_at=now))
    return result.rowcount == 1


async def insert_event(conn: AsyncConnection, *, event_id: str, type: str, payload_sha256: str,
                       now: datetime) -> None:
    """Record a received event (IntegrityError when the id was already received)."""
    await conn.execute(insert(stripe_events).values(id=event_id, type=type, payload_sha256=payload_sha256,
                                                    outcome="received", received_at=now))


async def set_event_outcome(conn: AsyncConnection, event_id: str, outcome: str) -> None:
    """What handling the event did, for people reading the table."""
    await conn.execute(update(stripe_events).where(stripe_events.c.id == event_id).values(outcome=outcome))


async def event_by_id(conn: AsyncConnection, event_id: str) -> dict[str, Any] | None:
    """A received event, or None."""
    row = (await conn.execute(select(stripe_events).where(stripe_events.c.id == event_id))).first()
    return dict(row._mapping) if row else None


async def insert_refund(conn: AsyncConnection, *, refund_id: str, payment_intent_id: str | None,
                        amount_cents: int, now: datetime, status: str = "unmatched") -> bool:
    """Record a refund (unmatched, or failed when its failure came first); False when the id is known.

    A concurrent insert of the same id fails with IntegrityError, which retries the whole delivery.
    """
    found = await conn.execute(select(stripe_refunds.c.id).where(stripe_refunds.c.id == refund_id))
    if found.first() is not None:
        return False
    await conn.execute(insert(stripe_refunds).values(
        id=refund_id, payment_intent_id=payment_intent_id, amount_cents=amount_cents, status=status,
        created_at=now))
    return True


async def refund_by_id(conn: AsyncConnection, refund_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    """A recorded refund, or None; `lock` as in `payment_by_session`."""
    query = select(stripe_refunds).where(stripe_refunds.c.id == refund_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    return dict(row._mapping) if row else None


async def mark_refund_failed(conn: AsyncConnection, refund_id: str, *, from_status: str) -> bool:
    """Mark a refund failed if it is still `from_status` (unmatched or applied); False if it was not.

    `applied_cents` is kept: it is what the ledger reversed, and so what the failure credits back.
    """
    result = await conn.execute(
        update(stripe_refunds)
        .where(stripe_refunds.c.id == refund_id, stripe_refunds.c.status == from_status)
        .values(status="failed"))
    return result.rowcount == 1


async def unmatched_refunds(conn: AsyncConnection, payment_intent_id: str) -> list[dict[str, Any]]:
    """Refunds received before their payment was credited, oldest first."""
    rows = await conn.execute(
        select(stripe_refunds)
        .where(stripe_refunds.c.payment_intent_id == payment_intent_id,
               stripe_refunds.c.status == "unmatched")
        .order_by(stripe_refunds.c.created_at, stripe_refunds.c.id))
    return [dict(r._mapping) for r in rows]


async def mark_refund_applied(conn: AsyncConnection, refund_id: str, applied_cents: int,
                              now: datetime) -> bool:
    """Mark an unmatched refund applied; False if it was applied already."""
    result = await conn.execute(
        update(stripe_refunds)
        .where(stripe_refunds.c.id == refund_id, stripe_refunds.c.status == "unmatched")
        .values(status="applied", applied_cents=applied_cents, applied_at=now))
    return result.rowcount == 1


# Auto top-up: the org's saved card and the one top-up in flight.

async def save_payment_method(conn: AsyncConnection, org_id: str, *, customer_id: str,
                              payment_method_id: str) -> bool:
    """Remember the card a deposit saved for off-session payments; False for an unknown org."""
    result = await conn.execute(update(orgs).where(orgs.c.id == org_id).values(
        stripe_customer_id=customer_id, stripe_payment_method_id=payment_method_id))
    return result.rowcount == 1


async def update_auto_topup(conn: AsyncConnection, org_id: str, values: dict[str, Any]) -> None:
    """Set some of the org's auto_topup_enabled / _threshold_cents / _amount_cents columns."""
    await conn.execute(update(orgs).where(orgs.c.id == org_id).values(**values))


async def claim_auto_topup(conn: AsyncConnection, org_id: str, *, attempt_id: str, now: datetime,
                           stale_before: datetime) -> dict[str, Any] | None:
    """Mark a top-up in flight if one is due; the org's amount, customer and card, or None.

    Due: enabled, a saved card, the balance below the threshold, and no top-up in flight (or only one
    started before `stale_before`). The conditional UPDATE is the guard: of concurrent claims, one wins.
    """
    threshold = orgs.c.auto_topup_threshold_cents * MICROCENTS_PER_CENT
    result = await conn.execute(
        update(orgs)
        .where(orgs.c.id == org_id, orgs.c.auto_topup_enabled.is_(True),
               orgs.c.stripe_customer_id.is_not(None), orgs.c.stripe_payment_method_id.is_not(None),
               orgs.c.balance_microcents < threshold,
               or_(orgs.c.auto_topup_started_at.is_(None), orgs.c.auto_topup_started_at < stale_before))
        .values(auto_topup_attempt_id=attempt_id, auto_topup_started_at=now)
        .returning(orgs.c.auto_topup_amount_cents, orgs.c.stripe_customer_id,
                   orgs.c.stripe_payment_method_id))
    row = result.first()
    return dict(row._mapping) if row else None


async def clear_auto_topup(conn: AsyncConnection, org_id: str, attempt_id: str | None) -> bool:
    """End the top-up in flight if it is still `attempt_id` (any, when None); False if it was not."""
    query = update(orgs).where(orgs.c.id == org_id)
    if attempt_id is not None:
        query = query.where(orgs.c.auto_topup_attempt_id == attempt_id)
    result = await conn.execute(query.values(auto_topup_attempt_id=None, auto_topup_started_at=None))
    return result.rowcount == 1


async def ensure_payment(conn: AsyncConnection, *, payment_id: str, org_id: str, amount_cents: int,
                         currency: str, now: datetime) -> dict[str, Any]:
    """The payment row `payment_id` (an off-session PaymentIntent), inserted as pending if missing."""
    found = await payment_by_session(conn, payment_id, lock=True)
    if found is None:
        await insert_payment(conn, session_id=payment_id, org_id=org_id, amount_cents=amount_cents,
                             currency=currency, now=now)
        found = await payment_by_session(conn, payment_id, lock=True)
    assert found is not None
    return found

"""Stripe deposits: Checkout Sessions for deposits, and the webhook that credits (and refunds) them.

Money rules (docs/product.md "Money"; docs/design.md "Rules that do not bend"):
- A deposit is credited once per payment, however often or in whatever order Stripe delivers events:
  the ledger entry's idempotency key is `stripe:payment:<payment_intent or session id>`, the payment
  row moves pending → paid with a conditional UPDATE, and every event id is recorded once.
- The credited amount is the session's `amount_total`, and only when it, the currency and the org
  match the pending payment this service created; otherwise the payment is marked `mismatch`, nothing
  is credited, and an error is logged for a person to resolve.
- Refunds are handled from `refund.created` (one ledger entry per refund id, key
  `stripe:refund:<refund id>`), capped at what the payment credited, and lower cumulative deposits by
  the refunded cents (the fee waiver counts net deposits). A refund whose payment is not credited yet
  (delivered out of order) is stored as unmatched and applied in the same transaction that credits the
  payment: never lost, never counted twice. A refund may take the balance below zero.
- A Checkout Session that expires (`checkout.session.expired`) or whose delayed payment fails
  (`checkout.session.async_payment_failed`) moves its pending payment to `expired` / `failed` with a
  conditional UPDATE. Both are final: Stripe cannot complete an expired session, so a "paid" completion
  that arrives afterwards is contradictory; it is not credited and is logged for a person. An expiry that
  arrives after the completion changes nothing.
- A refund that fails or is canceled after it was reversed here (`refund.failed`, or `refund.updated` /
  `charge.refund.updated` whose refund status is failed or canceled) is credited back once: a positive
  `refund` entry keyed `stripe:refund_failed:<refund id>`, of exactly what was reversed, raising
  cumulative deposits by as much. The refund row moves applied → failed with a conditional UPDATE.
  A failure for a refund held as unmatched just ends it (it is never applied); a failure for a refund
  never seen credits nothing and is recorded as failed, so that a late `refund.created` debits nothing.
- Each event's record, the payment row changes and the ledger entries commit in one transaction.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.clock import iso, utcnow
from alumia.config import Settings
from alumia.domain.money import cents_to_microcents
from alumia.domain.permissions import Permission
from alumia.errors import AppError, ErrorCode
from alumia.services.accounts import Principal
from alumia.storage import accounts, ledger, payments
from alumia.storage.db import Database
from alumia.storage.ledger import NewEntry

log = logging.getLogger("alumia.payments")

CURRENCY = "usd"
COMPLETION_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
REFUND_EVENT = "refund.created"
EXPIRED_EVENT = "checkout.session.expired"
ASYNC_FAILED_EVENT = "checkout.session.async_payment_failed"
# Events whose object is a Refund that may now be failed or canceled (Stripe sends refund.updated and,
# for charges, charge.refund.updated beside refund.failed; each acts only on those statuses).
REFUND_UPDATE_EVENTS = frozenset({"refund.failed", "refund.updated", "charge.refund.updated"})
REFUND_NOT_EFFECTIVE = frozenset({"failed", "canceled"})  # refund statuses under which no money left
INTENT_SUCCEEDED = "payment_intent.succeeded"
INTENT_FAILED = "payment_intent.payment_failed"
AUTO_TOPUP_KIND = "auto_topup"  # metadata.kind of an off-session auto top-up PaymentIntent
_ATTEMPTS = 3  # a webhook transaction that lost a race on a unique key is retried this many times

class StripeApi:
    """The app's one Stripe client (async, over httpx), made at start when Stripe is configured and
    closed at shutdown; Checkout deposits and auto top-ups share its connections.

    The `stripe` package (with httpx under it) is imported only here and where Stripe is used: it adds
    about 25 MiB to every process, which a gateway without Stripe configured never needs.
    """

    def __init__(self, settings: Settings) -> None:
        import stripe

        assert settings.stripe_secret_key is not None
        self._http = stripe.HTTPXClient(timeout=20)
        self.client = stripe.StripeClient(settings.stripe_secret_key.get_secret_value(),
                                          base_addresses={"api": settings.stripe_api_base},
                                          http_client=self._http, max_network_retries=2)

    @classmethod
    def open(cls, settings: Settings) -> "StripeApi | None":
        """The client, or None when Stripe is not configured."""
        return cls(settings) if settings.stripe_configured else None

    async def close(self) -> None:
        """Close the pooled connections."""
        await self._http.close_async()  # type: ignore[no-untyped-call]  # stripe leaves it unannotated


def checkout_params(settings: Settings, principal: Principal, amount_cents: int) -> dict[str, Any]:
    """The Checkout Session for a deposit: one USD line item of the amount, tagged with the org."""
    billing_url = f"{settings.public_url}/{principal.org_slug}/billing"
    metadata = {"org_id": principal.org_id, "amount_cents": str(amount_cents)}
    return {
        "mode": "payment",
        "line_items": [{"quantity": 1, "price_data": {
            "currency": CURRENCY, "unit_amount": amount_cents,
            "product_data": {"name": "Alumia balance deposit"}}}],
        "client_reference_id": principal.org_id,
        "metadata": metadata,
        # The card is kept (on a Stripe customer) for off-session auto top-ups.
        "customer_creation": "always",
        "payment_intent_data": {"metadata": metadata, "setup_future_usage": "off_session"},
        "success_url": f"{billing_url}?deposit=success&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{billing_url}?deposit=cancelled",
    }


async def start_checkout(db: Database, settings: Settings, stripe_api: StripeApi, principal: Principal, *,
                         amount_cents: int, idempotency_key: str | None) -> dict[str, Any]:
    """Create a Checkout Session for a deposit and record it as a pending payment.

    The row is written before the URL is returned, so nobody can pay a session this service does not
    know. With an Idempotency-Key the same key gives back the same session (Stripe's idempotency).
    """
    principal.require(Permission.MANAGE_BILLING, "depositing")
    low, high = settings.deposit_min_cents, settings.deposit_max_cents
    if not low <= amount_cents <= high:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"amountCents must be between {low} and {high}")
    import stripe  # already loaded by StripeApi

    options: dict[str, Any] = {}
    if idempotency_key:
        options["idempotency_key"] = f"alumia-checkout:{principal.org_id}:{idempotency_key}"
    try:
        session = await stripe_api.client.v1.checkout.sessions.create_async(
            checkout_params(settings, principal, amount_cents), options)  # type: ignore[arg-type]
    except stripe.StripeError as exc:
        log.error("stripe checkout session failed: %s (http %s)", type(exc).__name__, exc.http_status)
        raise AppError(ErrorCode.BAD_GATEWAY,
                       "the payment provider did not accept the request; try again") from exc
    if not session.id or not session.url:
        raise AppError(ErrorCode.BAD_GATEWAY, "the payment provider returned no checkout URL")
    try:
        async with db.write() as conn:
            await payments.insert_payment(conn, session_id=session.id, org_id=principal.org_id,
                                          amount_cents=amount_cents, currency=CURRENCY, now=utcnow())
    except IntegrityError:
        async with db.read() as conn:
            known = await payments.payment_by_session(conn, session.id)
        if known is None or known["org_id"] != principal.org_id or known["amount_cents"] != amount_cents:
            raise AppError(ErrorCode.CONFLICT,
                           "this Idempotency-Key was used for a different deposit") from None
    return {"checkoutUrl": session.url, "sessionId": session.id, "amountCents": amount_cents,
            "status": "pending"}


def deposit_json(row: dict[str, Any]) -> dict[str, Any]:
    """A Stripe payment as the deposits list shows it.

    status: pending (waiting for Stripe), paid, expired (the Checkout Session expired unpaid), failed
    (its delayed payment failed) or mismatch (Stripe's figures disagreed; a person resolves it). A
    refunded payment stays `paid`, with `refundedCents`. kind: auto top-ups are keyed by their
    PaymentIntent id, Checkout deposits by their session id.
    """
    return {"id": row["id"], "kind": "auto_topup" if row["id"] == row["payment_intent_id"] else "checkout",
            "amountCents": row["amount_cents"], "currency": row["currency"], "status": row["status"],
            "paidCents": row["paid_cents"], "refundedCents": row["refunded_cents"],
            "createdAt": iso(row["created_at"]), "updatedAt": iso(row["updated_at"])}


async def list_deposits(db: Database, principal: Principal, *, page: int, limit: int) -> dict[str, Any]:
    """The org's Stripe deposits and auto top-ups with their status, newest first, `limit` a page."""
    async with db.read() as conn:
        rows = await payments.list_payments(conn, principal.org_id, offset=(page - 1) * limit,
                                            limit=limit + 1)
    return {"items": [deposit_json(r) for r in rows[:limit]], "page": page, "limit": limit,
            "hasMore": len(rows) > limit}


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What a delivery did: `duplicate` when the event id had been received before."""

    event_id: str
    type: str
    outcome: str
    duplicate: bool = False

    def json(self) -> dict[str, Any]:
        """The webhook's answer body."""
        return {"received": True, "eventId": self.event_id, "type": self.type, "outcome": self.outcome,
                "duplicate": self.duplicate}


def verify_event(settings: Settings, raw: bytes, signature: str | None) -> dict[str, Any]:
    """The event, once `Stripe-Signature` proves it is Stripe's (BAD_REQUEST otherwise)."""
    if not settings.stripe_webhook_configured:
        raise AppError(ErrorCode.SERVICE_UNAVAILABLE, "Stripe webhooks are not configured")
    assert settings.stripe_webhook_secret is not None
    import stripe  # see StripeApi: only where Stripe is used

    try:
        stripe.Webhook.construct_event(raw, signature, settings.stripe_webhook_secret.get_secret_value())
        event = orjson.loads(raw)
    except (stripe.SignatureVerificationError, ValueError, TypeError, AttributeError) as exc:
        # A bad signature, or a signed body that is not a JSON object (a JSON list fails inside stripe).
        raise AppError(ErrorCode.BAD_REQUEST, "invalid Stripe webhook signature or payload") from exc
    if (not isinstance(event, dict) or not isinstance(event.get("id"), str)
            or not isinstance(event.get("type"), str)):
        raise AppError(ErrorCode.BAD_REQUEST, "not a Stripe event")
    return event


async def receive_webhook(db: Database, settings: Settings, raw: bytes,
                          signature: str | None) -> WebhookResult:
    """Verify, record and apply one webhook delivery, exactly once per event id.

    The same id with the same body again is acknowledged with no effect; with a different body it is a
    CONFLICT. A transaction that loses a race on a unique key (a concurrent delivery) rolls back whole and
    is retried, and then sees what the winner committed.
    """
    event = verify_event(settings, raw, signature)
    event_id, event_type = event["id"], event["type"]
    digest = hashlib.sha256(raw).hexdigest()
    for attempt in range(_ATTEMPTS):
        async with db.read() as conn:
            seen = await payments.event_by_id(conn, event_id)
        if seen is not None:
            if seen["payload_sha256"] != digest:
                raise AppError(ErrorCode.CONFLICT,
                               "this event id was received before with a different payload")
            return WebhookResult(event_id, event_type, seen["outcome"], duplicate=True)
        try:
            async with db.write() as conn:
                now = utcnow()
                await payments.insert_event(conn, event_id=event_id, type=event_type,
                                            payload_sha256=digest, now=now)
                outcome = await _apply(conn, event, now)
                await payments.set_event_outcome(conn, event_id, outcome)
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
            continue
        log.info("stripe event %s (%s): %s", event_id, event_type, outcome)
        return WebhookResult(event_id, event_type, outcome)
    raise AssertionError("unreachable")


def _object(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise AppError(ErrorCode.BAD_REQUEST, "the event has no data.object")
    return obj


async def _apply(conn: AsyncConnection, event: dict[str, Any], now: datetime) -> str:
    """Apply an event inside the transaction that records it; returns its outcome."""
    if event["type"] in COMPLETION_EVENTS:
        return await _complete(conn, _object(event), now)
    if event["type"] == REFUND_EVENT:
        return await _refund(conn, _object(event), now)
    if event["type"] == EXPIRED_EVENT:
        return await _close_session(conn, _object(event), "expired", now)
    if event["type"] == ASYNC_FAILED_EVENT:
        return await _close_session(conn, _object(event), "failed", now)
    if event["type"] in REFUND_UPDATE_EVENTS:
        return await _refund_updated(conn, event["type"], _object(event), now)
    if event["type"] == INTENT_SUCCEEDED:
        return await _intent_succeeded(conn, _object(event), now)
    if event["type"] == INTENT_FAILED:
        return await _intent_failed(conn, _object(event))
    return "ignored"


def _cents(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _complete(conn: AsyncConnection, session: dict[str, Any], now: datetime) -> str:
    """Credit a paid Checkout Session once, then any refunds that arrived before it."""
    session_id = session.get("id")
    if not isinstance(session_id, str):
        raise AppError(ErrorCode.BAD_REQUEST, "the session has no id")
    if session.get("payment_status") != "paid":
        return "not_paid"
    payment = await payments.payment_by_session(conn, session_id, lock=True)
    if payment is None:
        log.warning("stripe session %s completed but no deposit here started it; not credited", session_id)
        return "unknown_session"
    if payment["status"] in ("expired", "failed"):
        # Stripe cannot complete an expired session, nor succeed a payment it reported failed: a "paid"
        # completion now contradicts what was recorded. Crediting it could credit money never received.
        log.error("stripe session %s reported paid after it was recorded %s; not credited, for a person"
                  " to check in Stripe", session_id, payment["status"])
    if payment["status"] != "pending":
        return f"already_{payment['status']}"
    amount = _cents(session.get("amount_total"))
    raw_metadata = session.get("metadata")
    metadata = raw_metadata if isinstance(raw_metadata, dict) else {}
    if (amount != payment["amount_cents"] or session.get("currency") != payment["currency"]
            or session.get("client_reference_id") != payment["org_id"]
            or metadata.get("org_id") != payment["org_id"]):
        log.error("stripe session %s does not match its deposit (amount %s, currency %s); not credited,"
                  " marked mismatch", session_id, amount, session.get("currency"))
        await payments.set_status(conn, session_id, "mismatch", now)
        return "mismatch"
    assert amount is not None
    intent = session.get("payment_intent")
    intent_id = intent if isinstance(intent, str) else intent.get("id") if isinstance(intent, dict) else None
    if not await payments.claim_paid(conn, session_id, payment_intent_id=intent_id, paid_cents=amount,
                                     now=now):
        return "already_paid"
    await ledger.append(conn, NewEntry(
        org_id=payment["org_id"], type="deposit", amount_microcents=cents_to_microcents(amount),
        description="Deposit (Stripe)", idempotency_key=f"stripe:payment:{intent_id or session_id}"),
        now, cumulative_deposit_cents=amount)
    if isinstance(intent, dict):
        await _save_card(conn, payment["org_id"], session.get("customer"), intent)
    if intent_id:
        for refund in await payments.unmatched_refunds(conn, intent_id):
            log.info("applying refund %s that arrived before its payment %s", refund["id"], intent_id)
            await _apply_refund(conn, session_id, refund["id"], refund["amount_cents"], now)
    return "credited"


async def _close_session(conn: AsyncConnection, session: dict[str, Any], status: str, now: datetime) -> str:
    """A session that expired or whose delayed payment failed: its pending deposit ends, uncredited.

    Only a pending payment moves; one already paid (its completion came first) is left as it is.
    """
    session_id = session.get("id")
    if not isinstance(session_id, str):
        raise AppError(ErrorCode.BAD_REQUEST, "the session has no id")
    payment = await payments.payment_by_session(conn, session_id, lock=True)
    if payment is None:
        log.warning("stripe session %s is %s but no deposit here started it; nothing to do", session_id,
                    status)
        return "unknown_session"
    if not await payments.close_pending(conn, session_id, status, now):
        return f"already_{payment['status']}"
    return status


async def _refund(conn: AsyncConnection, refund: dict[str, Any], now: datetime) -> str:
    """Record a refund once; reverse it now if its payment is credited, else when the payment is."""
    refund_id, amount = refund.get("id"), _cents(refund.get("amount"))
    if not isinstance(refund_id, str) or amount is None or amount < 0:
        raise AppError(ErrorCode.BAD_REQUEST, "the refund has no id or amount")
    if refund.get("status") in REFUND_NOT_EFFECTIVE:
        return "refund_not_effective"
    if refund.get("currency") != CURRENCY:
        log.error("stripe refund %s is in %r, not usd; not applied", refund_id, refund.get("currency"))
        return "refund_wrong_currency"
    intent = refund.get("payment_intent")
    intent_id = intent if isinstance(intent, str) else None
    if not await payments.insert_refund(conn, refund_id=refund_id, payment_intent_id=intent_id,
                                        amount_cents=amount, now=now):
        known = await payments.refund_by_id(conn, refund_id)
        if known is not None and known["status"] == "failed":
            return "refund_already_failed"  # its failure was delivered first: nothing to reverse
        return "refund_already_recorded"
    payment = await payments.payment_by_intent(conn, intent_id, lock=True) if intent_id else None
    if payment is None or payment["status"] != "paid":
        log.warning("stripe refund %s for payment %s that is not credited here (yet); held as unmatched",
                    refund_id, intent_id)
        return "refund_unmatched"
    return await _apply_refund(conn, payment["id"], refund_id, amount, now)


async def _apply_refund(conn: AsyncConnection, session_id: str, refund_id: str, amount: int,
                        now: datetime) -> str:
    """Reverse up to `amount` cents of a credited payment: a negative `refund` entry, once."""
    payment = await payments.payment_by_session(conn, session_id, lock=True)
    assert payment is not None
    applied = max(0, min(amount, payment["paid_cents"] - payment["refunded_cents"]))
    if not await payments.mark_refund_applied(conn, refund_id, applied, now):
        return "refund_already_applied"
    if applied < amount:
        log.warning("stripe refund %s of %s cents capped at %s (what is left of payment %s)",
                    refund_id, amount, applied, session_id)
    if applied == 0:
        return "refund_nothing_left"
    if not await payments.add_refunded(conn, session_id, applied, now):
        # Unreachable while the payment row is locked above; fail the whole transaction if it ever is.
        raise RuntimeError(f"refund {refund_id} would take payment {session_id} past what it paid")
    await ledger.append(conn, NewEntry(
        org_id=payment["org_id"], type="refund", amount_microcents=-cents_to_microcents(applied),
        description="Refund (Stripe)", idempotency_key=f"stripe:refund:{refund_id}"),
        now, cumulative_deposit_cents=-applied)
    return "refunded"


async def _refund_updated(conn: AsyncConnection, event_type: str, refund: dict[str, Any],
                          now: datetime) -> str:
    """A refund that failed or was canceled: give back, once, whatever was reversed for it.

    Its row moves to `failed` (from applied, unmatched, or inserted so when the refund was never seen),
    which is both the record and the guard: a second failure event for it finds it failed already.
    Locks go payment row first, then refund row, as when a completion applies held refunds.
    """
    refund_id = _id(refund)
    if refund_id is None:
        raise AppError(ErrorCode.BAD_REQUEST, "the refund has no id")
    status = refund.get("status")
    if status not in REFUND_NOT_EFFECTIVE:
        if event_type == "refund.failed":
            log.warning("stripe refund.failed for %s says status %r; nothing done", refund_id, status)
        return "ignored"  # e.g. refund.updated for pending → succeeded: the debit already stands
    known = await payments.refund_by_id(conn, refund_id)
    if known is None:
        log.warning("stripe refund %s is %s but was never received here; nothing credited back (recorded,"
                    " so a late refund.created for it debits nothing)", refund_id, status)
        amount, intent_id = _cents(refund.get("amount")), _id(refund.get("payment_intent"))
        await payments.insert_refund(conn, refund_id=refund_id, payment_intent_id=intent_id,
                                     amount_cents=max(amount or 0, 0), now=now, status="failed")
        return "refund_failed_unknown"
    intent_id = known["payment_intent_id"]
    payment = await payments.payment_by_intent(conn, intent_id, lock=True) if intent_id else None
    known = await payments.refund_by_id(conn, refund_id, lock=True)
    assert known is not None  # refunds are never deleted
    if known["status"] == "failed":
        return "refund_already_failed"
    if not await payments.mark_refund_failed(conn, refund_id, from_status=known["status"]):
        # Unreachable while both rows are locked; fail the delivery (Stripe retries) if it ever is.
        raise RuntimeError(f"refund {refund_id} changed while locked")
    if known["status"] == "unmatched":
        log.info("stripe refund %s %s before its payment was credited; it will not be applied", refund_id,
                 status)
        return "refund_failed_unapplied"
    given_back = known["applied_cents"] or 0
    if given_back == 0:
        return "refund_failed_nothing_applied"  # it was capped to nothing: nothing was reversed
    if payment is None or not await payments.subtract_refunded(conn, payment["id"], given_back, now):
        # An applied refund always has its credited payment; fail the delivery if that ever breaks.
        raise RuntimeError(f"refund {refund_id} was applied but its payment cannot take it back")
    await ledger.append(conn, NewEntry(
        org_id=payment["org_id"], type="refund", amount_microcents=cents_to_microcents(given_back),
        description=f"Refund {status} (Stripe): credited back",
        idempotency_key=f"stripe:refund_failed:{refund_id}"), now, cumulative_deposit_cents=given_back)
    log.info("stripe refund %s %s; %s cents credited back to org %s", refund_id, status, given_back,
             payment["org_id"])
    return "refund_failed_credited_back"


def _id(value: object) -> str | None:
    """An object's id, whether Stripe sent the id or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


async def _save_card(conn: AsyncConnection, org_id: str, customer: object, intent: dict[str, Any]) -> bool:
    """Keep the card of a deposit paid with `setup_future_usage: off_session`, with its customer."""
    customer_id, method_id = _id(customer) or _id(intent.get("customer")), _id(intent.get("payment_method"))
    if intent.get("setup_future_usage") != "off_session" or not customer_id or not method_id:
        return False
    return await payments.save_payment_method(conn, org_id, customer_id=customer_id,
                                              payment_method_id=method_id)


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


async def _intent_succeeded(conn: AsyncConnection, intent: dict[str, Any], now: datetime) -> str:
    """A Checkout deposit's PaymentIntent saves its card; an auto top-up's is credited once."""
    intent_id, metadata = _id(intent), _metadata(intent)
    org_id = metadata.get("org_id")
    if not intent_id or not isinstance(org_id, str):
        return "ignored"
    if metadata.get("kind") != AUTO_TOPUP_KIND:
        return "card_saved" if await _save_card(conn, org_id, None, intent) else "ignored"
    attempt_id = metadata.get("attempt_id") if isinstance(metadata.get("attempt_id"), str) else None
    if not await payments.clear_auto_topup(conn, org_id, attempt_id) and await _org_missing(conn, org_id):
        log.error("auto top-up %s names org %s, which is not here; not credited", intent_id, org_id)
        return "unknown_org"
    amount, ordered = _cents(intent.get("amount_received")), _cents(intent.get("amount"))
    if amount is None or ordered is None or amount <= 0 or intent.get("currency") != CURRENCY:
        log.error("auto top-up %s for org %s: amount %s %s; not credited", intent_id, org_id, amount,
                  intent.get("currency"))
        return "mismatch"
    payment = await payments.ensure_payment(conn, payment_id=intent_id, org_id=org_id, amount_cents=ordered,
                                            currency=CURRENCY, now=now)
    if payment["status"] != "pending":
        return f"already_{payment['status']}"
    if payment["org_id"] != org_id or amount != payment["amount_cents"]:
        log.error("auto top-up %s does not match its payment (org %s, %s cents); not credited, marked"
                  " mismatch", intent_id, org_id, amount)
        await payments.set_status(conn, intent_id, "mismatch", now)
        return "mismatch"
    if not await payments.claim_paid(conn, intent_id, payment_intent_id=intent_id, paid_cents=amount,
                                     now=now):
        return "already_paid"
    await ledger.append(conn, NewEntry(
        org_id=org_id, type="deposit", amount_microcents=cents_to_microcents(amount),
        description="Auto top-up (Stripe)", idempotency_key=f"stripe:payment:{intent_id}"),
        now, cumulative_deposit_cents=amount)
    for refund in await payments.unmatched_refunds(conn, intent_id):
        log.info("applying refund %s that arrived before its payment %s", refund["id"], intent_id)
        await _apply_refund(conn, intent_id, refund["id"], refund["amount_cents"], now)
    return "credited"


async def _intent_failed(conn: AsyncConnection, intent: dict[str, Any]) -> str:
    """A failed auto top-up ends its attempt, so the next crossing of the threshold tries again."""
    metadata = _metadata(intent)
    org_id, attempt_id = metadata.get("org_id"), metadata.get("attempt_id")
    if metadata.get("kind") != AUTO_TOPUP_KIND or not isinstance(org_id, str):
        return "ignored"
    error = intent.get("last_payment_error")
    code = error.get("decline_code") or error.get("code") if isinstance(error, dict) else None
    log.warning("auto top-up %s for org %s failed (%s)", _id(intent), org_id, code)
    await payments.clear_auto_topup(conn, org_id, attempt_id if isinstance(attempt_id, str) else None)
    return "auto_topup_failed"


async def _org_missing(conn: AsyncConnection, org_id: str) -> bool:
    return await accounts.org_by_id(conn, org_id) is None

"""Auto top-up: when a charge takes the balance below the org's threshold, one off-session Stripe payment.

- Settings: `PATCH /api/v1/billing` (billing-manage). Turning it on needs Stripe and a card saved by a
  Checkout deposit (`setup_future_usage: off_session`; the webhook stores the customer and card).
- Trigger: after a charge commits, the charging code calls `after_charge`, which costs nothing unless the
  org has auto top-up on and the balance is below its threshold. The top-up runs as a background task:
  it never delays or fails the call that crossed the threshold.
- One at a time: the task first claims the org's "in flight" marker with a conditional UPDATE (only when
  still due: enabled, card saved, balance below threshold, nothing in flight or the last one started more
  than `auto_topup_in_flight_seconds` ago). Of any number of concurrent claims, in any number of
  processes, one wins. The marker is cleared by the payment's webhook (succeeded or failed), at once by a
  decline, or by the timeout; an error that leaves the outcome unknown (network) keeps it until the
  webhook or the timeout, so an unknown payment is never followed by a second one.
- Credit: `payment_intent.succeeded` with metadata kind `auto_topup` credits a `deposit` once per
  PaymentIntent (services/payments.py, same rules as Checkout deposits: idempotency key
  `stripe:payment:<pi id>`, a `stripe_payments` row moved pending → paid, each event id applied once).
"""

import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from alumia.clock import utcnow
from alumia.config import Settings
from alumia.domain.money import cents_to_microcents
from alumia.domain.permissions import Permission
from alumia.errors import AppError, ErrorCode
from alumia.services import billing
from alumia.services.accounts import Principal
from alumia.services.background import Background
from alumia.services.payments import AUTO_TOPUP_KIND, CURRENCY, StripeApi
from alumia.storage import accounts
from alumia.storage import payments as store
from alumia.storage.db import Database

log = logging.getLogger("alumia.auto_topup")

FIELDS = {"autoTopupEnabled": "auto_topup_enabled", "autoTopupThresholdCents": "auto_topup_threshold_cents",
          "autoTopupAmountCents": "auto_topup_amount_cents"}

def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_patch(settings: Settings, body: dict[str, Any]) -> dict[str, Any]:
    """The column values a PATCH body asks for (VALIDATION_ERROR on anything else)."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"unknown field(s): {', '.join(unknown)}; expected "
                       + ", ".join(FIELDS))
    if not body:
        raise AppError(ErrorCode.VALIDATION_ERROR, "nothing to change; send " + ", ".join(FIELDS))
    values: dict[str, Any] = {}
    if "autoTopupEnabled" in body:
        if not isinstance(body["autoTopupEnabled"], bool):
            raise AppError(ErrorCode.VALIDATION_ERROR, "autoTopupEnabled must be true or false")
        values["auto_topup_enabled"] = body["autoTopupEnabled"]
    if "autoTopupThresholdCents" in body:
        threshold, high = body["autoTopupThresholdCents"], settings.auto_topup_max_threshold_cents
        if not _int(threshold) or not 0 <= threshold <= high:
            raise AppError(ErrorCode.VALIDATION_ERROR,
                           f"autoTopupThresholdCents must be an integer from 0 to {high}")
        values["auto_topup_threshold_cents"] = threshold
    if "autoTopupAmountCents" in body:
        amount = body["autoTopupAmountCents"]
        low, high = settings.deposit_min_cents, settings.deposit_max_cents
        if not _int(amount) or not low <= amount <= high:
            raise AppError(ErrorCode.VALIDATION_ERROR,
                           f"autoTopupAmountCents must be an integer from {low} to {high}")
        values["auto_topup_amount_cents"] = amount
    return values


async def update_settings(db: Database, settings: Settings, principal: Principal,
                          body: dict[str, Any]) -> dict[str, Any]:
    """Change the org's auto top-up settings; returns the snapshot's `balance` block."""
    principal.require(Permission.MANAGE_BILLING, "changing auto top-up")
    values = validate_patch(settings, body)
    async with db.write() as conn:
        if values.get("auto_topup_enabled"):
            if not settings.stripe_configured:
                raise AppError(ErrorCode.VALIDATION_ERROR,
                               "auto top-up needs Stripe, which is not configured here")
            org = await accounts.org_by_id(conn, principal.org_id)
            assert org is not None
            if not (org["stripe_customer_id"] and org["stripe_payment_method_id"]):
                raise AppError(ErrorCode.VALIDATION_ERROR,
                               "auto top-up needs a saved card: make a deposit through "
                               "Stripe Checkout first, and its card is kept for top-ups")
        await store.update_auto_topup(conn, principal.org_id, values)
    balance: dict[str, Any] = (await billing.snapshot(db, settings, principal))["balance"]
    if values.get("auto_topup_enabled") and balance["balanceMicrocents"] < cents_to_microcents(
            balance["autoTopupThresholdCents"]):
        log.info("org %s enabled auto top-up below its threshold", principal.org_id)
    return balance


def due(balance_after_microcents: int, threshold_cents: int | None) -> bool:
    """Whether a charge leaving this balance should start a top-up (threshold None: auto top-up off)."""
    return threshold_cents is not None and balance_after_microcents < cents_to_microcents(threshold_cents)


class AutoTopUp:
    """The app's auto top-up: starts at most one top-up task per org in this process (the database's
    in-flight marker keeps it to one across processes), with the app's Stripe client."""

    def __init__(self, db: Database, settings: Settings, stripe_api: StripeApi | None,
                 background: Background) -> None:
        self._db, self._settings, self._stripe, self._background = db, settings, stripe_api, background
        self._running: set[str] = set()  # orgs with a top-up task here: later crossings skip the claim

    def after_charge(self, org_id: str, balance_after_microcents: int, threshold_cents: int | None) -> None:
        """Called once a charge has committed: start a top-up in the background when one may be due.

        Synchronous and cheap; with auto top-up off (`threshold_cents` None) or the balance at or above
        the threshold it does nothing. The background task claims the marker, so a stale reading here is
        harmless.
        """
        if self._stripe is None or not due(balance_after_microcents, threshold_cents):
            return
        if org_id in self._running:
            return
        self._running.add(org_id)
        task = self._background.spawn(self.start_top_up(org_id), f"auto top-up for org {org_id}")
        task.add_done_callback(lambda _t: self._running.discard(org_id))

    async def start_top_up(self, org_id: str) -> str | None:
        """Start one top-up if it is due and none is in flight; the PaymentIntent id, or None."""
        db, settings, stripe_api = self._db, self._settings, self._stripe
        if stripe_api is None:
            return None
        import stripe  # loaded by StripeApi already (see there)

        attempt_id = str(uuid.uuid4())
        now = utcnow()
        async with db.write() as conn:
            claim = await store.claim_auto_topup(
                conn, org_id, attempt_id=attempt_id, now=now,
                stale_before=now - timedelta(seconds=settings.auto_topup_in_flight_seconds))
        if claim is None:
            return None
        amount = claim["auto_topup_amount_cents"]
        params = {"amount": amount, "currency": CURRENCY, "customer": claim["stripe_customer_id"],
                  "payment_method": claim["stripe_payment_method_id"], "off_session": True, "confirm": True,
                  "description": "Alumia balance auto top-up",
                  "metadata": {"org_id": org_id, "kind": AUTO_TOPUP_KIND, "attempt_id": attempt_id,
                               "amount_cents": str(amount)}}
        log.info("auto top-up %s for org %s: %s cents", attempt_id, org_id, amount)
        try:
            intent = await stripe_api.client.v1.payment_intents.create_async(
                params, {"idempotency_key": f"alumia-auto-topup:{attempt_id}"})  # type: ignore[arg-type]
        except stripe.CardError as exc:
            log.warning("auto top-up %s for org %s declined (%s); it will be tried again at the next "
                        "crossing", attempt_id, org_id, exc.code)
            async with db.write() as conn:
                await store.clear_auto_topup(conn, org_id, attempt_id)
            return None
        except stripe.StripeError as exc:
            # The payment may or may not exist: keep the marker until its webhook or the timeout.
            log.error("auto top-up %s for org %s: payment provider error %s (http %s); in flight until its "
                      "webhook or the timeout", attempt_id, org_id, type(exc).__name__, exc.http_status)
            return None
        if intent.status in ("requires_payment_method", "requires_action", "canceled"):
            log.warning("auto top-up %s for org %s needs the customer (%s); not retried until the next "
                        "crossing", attempt_id, org_id, intent.status)
            async with db.write() as conn:
                await store.clear_auto_topup(conn, org_id, attempt_id)
            return intent.id
        try:
            async with db.write() as conn:
                await store.ensure_payment(conn, payment_id=intent.id, org_id=org_id, amount_cents=amount,
                                           currency=CURRENCY, now=utcnow())
        except IntegrityError:  # the webhook inserts the row too, if it got there first
            log.debug("payment row for %s already written by its webhook", intent.id)
        return intent.id

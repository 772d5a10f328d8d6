"""Stripe deposits: Checkout against a local stand-in of Stripe's API, webhooks signed locally.

Each backend gets its own server configured for Stripe; after every test the org's balance equals the
sum of its ledger entries.
"""

import asyncio
import json
import secrets
import time

import httpx
from sqlalchemy import select
from stripe_standin import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    StripeEnv,
    completed_session,
    event,
    refund,
    signed,
)

from alumia.storage import accounts, ledger
from alumia.storage.tables import ledger_entries, stripe_events

from harness import Org, Server, data, error

WEBHOOK = "/api/v1/billing/webhooks/stripe"
DEPOSIT = "/api/v1/billing/deposit"
PROMO_MICROCENTS = 10_000_000  # the early-bird credit every new org starts with


async def money(srv: Server, org: Org) -> tuple[int, int, list[dict]]:
    """Balance (microcents), cumulative deposits (cents) and ledger entries; checks balance = Σ entries."""
    async with srv.db.read() as conn:
        row = await accounts.org_by_id(conn, org.id)
        assert row is not None
        total = await ledger.sum_entries(conn, org.id)
        entries = [dict(r._mapping) for r in await conn.execute(
            select(ledger_entries).where(ledger_entries.c.org_id == org.id).order_by(ledger_entries.c.id))]
    assert row["balance_microcents"] == total, "the balance must equal the sum of its ledger entries"
    return row["balance_microcents"], row["cumulative_deposits_cents"], entries


async def deliver(srv: Server, body: dict | str, secret: str = WEBHOOK_SECRET,
                  timestamp: int | None = None) -> httpx.Response:
    raw, headers = signed(body, secret, timestamp)
    async with srv.api(None) as client:
        return await client.post(WEBHOOK, content=raw, headers=headers)


async def checkout(env: StripeEnv, org: Org, cents: int) -> dict:
    """Start a deposit; returns the stand-in's session."""
    async with env.server.api(org.key) as api:
        started = data(await api.post(DEPOSIT, json={"amountCents": cents}), 201)
    return env.stripe.sessions[started["sessionId"]]


async def test_snapshot_reports_stripe_and_no_direct_deposits(env: StripeEnv) -> None:
    org = await env.server.new_org()
    async with env.server.api(org.key) as api:
        snap = data(await api.get("/api/v1/billing"))
    assert snap["payment"] == {"stripeConfigured": True, "webhookConfigured": True,
                               "directDepositAvailable": False, "billingEnforced": True}


async def test_deposit_creates_a_checkout_session_and_credits_nothing_yet(env: StripeEnv) -> None:
    org = await env.server.new_org()
    before = len(env.stripe.requests)
    async with env.server.api(org.key) as api:
        started = data(await api.post(DEPOSIT, json={"amountCents": 2_500},
                                      headers={"Idempotency-Key": "dep-1"}), 201)
        again = data(await api.post(DEPOSIT, json={"amountCents": 2_500},
                                    headers={"Idempotency-Key": "dep-1"}), 201)
    assert started["status"] == "pending" and started["amountCents"] == 2_500
    assert started["sessionId"].startswith("cs_test_")
    assert started["checkoutUrl"] == f"https://checkout.stripe.test/c/pay/{started['sessionId']}"
    assert again == started
    sent = env.stripe.requests[before]
    assert sent["path"] == "/v1/checkout/sessions"
    assert sent["authorization"] == f"Bearer {SECRET_KEY}"
    assert sent["idempotencyKey"] == f"alumia-checkout:{org.id}:dep-1"
    form = sent["form"]
    assert form["mode"] == "payment"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["line_items[0][price_data][unit_amount]"] == "2500"
    assert form["line_items[0][quantity]"] == "1"
    assert form["client_reference_id"] == org.id
    assert form["metadata[org_id]"] == org.id and form["metadata[amount_cents]"] == "2500"
    assert form["success_url"].startswith(f"https://alumia.test/{org.slug}/billing?")
    assert form["cancel_url"].startswith(f"https://alumia.test/{org.slug}/billing?")
    balance, deposits, entries = await money(env.server, org)
    assert (balance, deposits, len(entries)) == (PROMO_MICROCENTS, 0, 1)


async def test_amount_limits_and_permissions(env: StripeEnv) -> None:
    org = await env.server.new_org()
    member = await env.server.member_key(org, "member")
    before = len(env.stripe.requests)
    async with env.server.api(org.key) as api:
        for body in ({"amountCents": 499}, {"amountCents": 1_000_001}, {"amountCents": 0},
                     {"amountCents": "500"}, {"amountCents": 5.0}, {}):
            error(await api.post(DEPOSIT, json=body), 422, "VALIDATION_ERROR")
        data(await api.post(DEPOSIT, json={"amountCents": 500}), 201)
        data(await api.post(DEPOSIT, json={"amountCents": 1_000_000}), 201)
    async with env.server.api(member) as as_member:
        error(await as_member.post(DEPOSIT, json={"amountCents": 1_000}), 403, "FORBIDDEN")
    assert len(env.stripe.requests) == before + 2
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS, 0)


async def test_completion_replayed_concurrently_credits_once(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 6_000))
    body = event("checkout.session.completed", session)
    answers = await asyncio.gather(*(deliver(env.server, body) for _ in range(5)))
    results = [data(a) for a in answers]
    assert sorted(r["duplicate"] for r in results) == [False, True, True, True, True]
    assert {r["outcome"] for r in results} == {"credited"}
    # A different event for the same payment (e.g. async_payment_succeeded) credits nothing more.
    data(await deliver(env.server, event("checkout.session.async_payment_succeeded", session)))
    balance, deposits, entries = await money(env.server, org)
    assert balance == PROMO_MICROCENTS + 60_000_000 and deposits == 6_000
    [deposit] = [e for e in entries if e["type"] == "deposit"]
    assert deposit["idempotency_key"] == f"stripe:payment:{session['payment_intent']}"
    async with env.server.api(org.key) as api:
        snap = data(await api.get("/api/v1/billing"))
    assert snap["balance"]["cumulativeDepositsCents"] == 6_000


async def test_bad_signatures_change_nothing(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 1_000))
    body = event("checkout.session.completed", session)
    error(await deliver(env.server, body, secret="whsec_" + secrets.token_hex(16)), 400, "BAD_REQUEST")
    error(await deliver(env.server, body, timestamp=int(time.time()) - 3_600), 400, "BAD_REQUEST")
    raw, headers = signed(body, WEBHOOK_SECRET)
    tampered = raw.replace(b'"amount_total": 1000', b'"amount_total": 9000')
    assert tampered != raw
    async with env.server.api(None) as client:
        error(await client.post(WEBHOOK, content=tampered, headers=headers), 400, "BAD_REQUEST")
        error(await client.post(WEBHOOK, content=raw), 400, "BAD_REQUEST")
        error(await client.post(WEBHOOK, content=raw, headers={"Stripe-Signature": "garbage"}),
              400, "BAD_REQUEST")
    async with env.server.db.read() as conn:
        seen = (await conn.execute(select(stripe_events).where(stripe_events.c.id == body["id"]))).first()
    assert seen is None
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS, 0)
    # The genuine delivery still works afterwards.
    assert data(await deliver(env.server, body))["outcome"] == "credited"


async def test_same_event_id_with_a_different_payload_is_a_conflict(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 1_000))
    body = event("checkout.session.completed", session)
    data(await deliver(env.server, body))
    altered = {**body, "created": body["created"] + 1}
    error(await deliver(env.server, altered), 409, "CONFLICT")
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS + 10_000_000, 1_000)


async def test_refund_reverses_once_and_is_capped(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 5_000))
    data(await deliver(env.server, event("checkout.session.completed", session)))
    first = refund(session["payment_intent"], 2_000)
    body = event("refund.created", first)
    assert data(await deliver(env.server, body))["outcome"] == "refunded"
    data(await deliver(env.server, body))  # a replay
    # The same refund in another event (another id) is still one refund.
    assert data(await deliver(env.server, event("refund.created", first)))["outcome"] == \
        "refund_already_recorded"
    balance, deposits, entries = await money(env.server, org)
    assert balance == PROMO_MICROCENTS + 30_000_000 and deposits == 3_000
    [reversal] = [e for e in entries if e["type"] == "refund"]
    assert reversal["amount_microcents"] == -20_000_000
    # A second refund larger than what is left is capped at the rest of the payment.
    over = event("refund.created", refund(session["payment_intent"], 4_000))
    assert data(await deliver(env.server, over))["outcome"] == "refunded"
    balance, deposits, entries = await money(env.server, org)
    assert balance == PROMO_MICROCENTS and deposits == 0
    assert sum(e["amount_microcents"] for e in entries if e["type"] == "refund") == -50_000_000
    async with env.server.api(org.key) as api:
        snap = data(await api.get("/api/v1/billing"))
    assert snap["balance"]["cumulativeDepositsCents"] == 0


async def test_refund_before_completion_is_applied_when_the_payment_arrives(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 4_000))
    early = event("refund.created", refund(session["payment_intent"], 1_500))
    assert data(await deliver(env.server, early))["outcome"] == "refund_unmatched"
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS, 0)
    completion = event("checkout.session.completed", session)
    await asyncio.gather(*(deliver(env.server, completion) for _ in range(3)))
    data(await deliver(env.server, early))  # the early refund replayed: nothing more
    balance, deposits, entries = await money(env.server, org)
    assert balance == PROMO_MICROCENTS + 25_000_000 and deposits == 2_500
    assert [e["type"] for e in entries] == ["promo_credit", "deposit", "refund"]


async def test_unknown_session_and_other_events_are_acknowledged_without_effect(env: StripeEnv) -> None:
    org = await env.server.new_org()
    stranger = completed_session({"id": "cs_test_" + secrets.token_hex(8), "object": "checkout.session",
                                  "amount_total": 5_000, "currency": "usd", "client_reference_id": org.id,
                                  "metadata": {"org_id": org.id, "amount_cents": "5000"}})
    assert data(await deliver(env.server, event("checkout.session.completed", stranger)))["outcome"] == \
        "unknown_session"
    assert data(await deliver(env.server, event("customer.created", {"id": "cus_1"})))["outcome"] == "ignored"
    unpaid = {**(await checkout(env, org, 700)), "status": "complete", "payment_status": "unpaid"}
    assert data(await deliver(env.server, event("checkout.session.completed", unpaid)))["outcome"] == \
        "not_paid"
    # A paid session whose amount differs from the deposit started here is not credited.
    session = completed_session(await checkout(env, org, 800))
    wrong = {**session, "amount_total": 80_000}
    assert data(await deliver(env.server, event("checkout.session.completed", wrong)))["outcome"] == \
        "mismatch"
    assert "no deposit here started it" in env.server.log_text()
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS, 0)


async def test_webhook_bodies_that_are_not_events_are_refused(env: StripeEnv) -> None:
    error(await deliver(env.server, json.dumps([1, 2])), 400, "BAD_REQUEST")
    error(await deliver(env.server, "not json"), 400, "BAD_REQUEST")

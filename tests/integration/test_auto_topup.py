"""Auto top-up: settings, the card a Checkout deposit saves, and one off-session payment at a time.

Each backend gets a server configured for Stripe talking to the local stand-in; webhooks are signed
locally. After every step that moves money, the org's balance equals the sum of its ledger entries.
"""

import asyncio
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from stripe_standin import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    StripeEnv,
    checkout_intent,
    completed_session,
    event,
    signed,
)

from alumia.storage import accounts, ledger
from alumia.storage.tables import ledger_entries

from harness import Org, Server, data, error, run_cli

WEBHOOK = "/api/v1/billing/webhooks/stripe"
BILLING = "/api/v1/billing"
PROMO_MICROCENTS = 10_000_000
CALL = {"model": "gpt-5.6-sol", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


async def org_row(srv: Server, org: Org) -> dict:
    """The org's row, after checking that its balance equals the sum of its ledger entries."""
    async with srv.db.read() as conn:
        row = await accounts.org_by_id(conn, org.id)
        assert row is not None
        assert row["balance_microcents"] == await ledger.sum_entries(conn, org.id)
    return row


async def entries(srv: Server, org: Org) -> list[dict]:
    async with srv.db.read() as conn:
        rows = await conn.execute(select(ledger_entries).where(ledger_entries.c.org_id == org.id)
                                  .order_by(ledger_entries.c.id))
        return [dict(r._mapping) for r in rows]


async def deliver(srv: Server, body: dict) -> dict:
    raw, headers = signed(body, WEBHOOK_SECRET)
    async with srv.api(None) as client:
        return data(await client.post(WEBHOOK, content=raw, headers=headers))


async def deposit_with_card(env: StripeEnv, org: Org, cents: int = 5_000) -> tuple[str, str]:
    """A Checkout deposit paid with a card kept for later; returns (customer, payment method)."""
    async with env.server.api(org.key) as api:
        started = data(await api.post("/api/v1/billing/deposit", json={"amountCents": cents}), 201)
    form = env.stripe.requests[-1]["form"]
    assert form["customer_creation"] == "always"
    assert form["payment_intent_data[setup_future_usage]"] == "off_session"
    session = env.stripe.sessions[started["sessionId"]]
    customer, method = "cus_" + secrets.token_hex(8), "pm_" + secrets.token_hex(8)
    paid = {**completed_session(session), "customer": customer}
    assert (await deliver(env.server, event("checkout.session.completed", paid)))["outcome"] == "credited"
    intent = checkout_intent(session, paid["payment_intent"], customer, method)
    assert (await deliver(env.server, event("payment_intent.succeeded", intent)))["outcome"] == "card_saved"
    row = await org_row(env.server, org)
    assert (row["stripe_customer_id"], row["stripe_payment_method_id"]) == (customer, method)
    return customer, method


async def enable(env: StripeEnv, org: Org, threshold: int = 100_000, amount: int = 2_500) -> dict:
    async with env.server.api(org.key) as api:
        return data(await api.patch(BILLING, json={"autoTopupEnabled": True,
                                                   "autoTopupThresholdCents": threshold,
                                                   "autoTopupAmountCents": amount}))


async def calls(srv: Server, org: Org, n: int = 1) -> None:
    async with srv.api(org.key) as api:
        answers = await asyncio.gather(*(api.post("/v1/chat/completions", json=CALL) for _ in range(n)))
    assert [a.status_code for a in answers] == [200] * n, answers[0].text


def intents_for(env: StripeEnv, org: Org) -> list[dict[str, Any]]:
    return [i for i in env.stripe.intents if i["metadata"].get("org_id") == org.id]


async def wait_for_intents(env: StripeEnv, org: Org, count: int, settle: float = 0.7) -> list[dict]:
    """The org's PaymentIntents once `count` exist, after a pause in which no more may appear."""
    deadline = time.monotonic() + 10
    while len(intents_for(env, org)) < count:
        assert time.monotonic() < deadline, f"expected {count} PaymentIntent(s)"
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle)
    found = intents_for(env, org)
    assert len(found) == count, found
    return found


async def wait_for_marker(env: StripeEnv, org: Org, present: bool) -> None:
    deadline = time.monotonic() + 10
    while ((await org_row(env.server, org))["auto_topup_attempt_id"] is not None) != present:
        assert time.monotonic() < deadline, "the in-flight marker did not change"
        await asyncio.sleep(0.05)


async def test_patch_validation_and_permissions(env: StripeEnv) -> None:
    org = await env.server.new_org()
    member = await env.server.member_key(org, "member")
    async with env.server.api(member) as as_member:
        error(await as_member.patch(BILLING, json={"autoTopupThresholdCents": 100}), 403, "FORBIDDEN")
    async with env.server.api(org.key) as api:
        for body in ({}, {"autoTopupThresholdCents": -1}, {"autoTopupThresholdCents": 1_000_001},
                     {"autoTopupThresholdCents": "500"}, {"autoTopupThresholdCents": True},
                     {"autoTopupAmountCents": 499}, {"autoTopupAmountCents": 1_000_001},
                     {"autoTopupAmountCents": 2.5}, {"autoTopupEnabled": "yes"}, {"other": 1}):
            error(await api.patch(BILLING, json=body), 422, "VALIDATION_ERROR")
        message = error(await api.patch(BILLING, json={"autoTopupEnabled": True}), 422, "VALIDATION_ERROR")
        assert "saved card" in message
        balance = data(await api.patch(BILLING, json={"autoTopupThresholdCents": 0,
                                                      "autoTopupAmountCents": 1_000_000}))
        assert balance["autoTopupEnabled"] is False
        assert (balance["autoTopupThresholdCents"], balance["autoTopupAmountCents"]) == (0, 1_000_000)
        assert balance["balanceMicrocents"] == PROMO_MICROCENTS
        snap = data(await api.get(BILLING))
    assert snap["balance"] == balance
    await deposit_with_card(env, org)
    assert (await enable(env, org, threshold=700))["autoTopupEnabled"] is True


async def test_concurrent_crossings_start_one_payment_credited_once(env: StripeEnv) -> None:
    org = await env.server.new_org()
    customer, method = await deposit_with_card(env, org)
    await enable(env, org)  # $1,000 threshold: every charge leaves the balance below it
    before = len(env.stripe.requests)
    await calls(env.server, org, 8)
    [intent] = await wait_for_intents(env, org, 1)
    sent = [r for r in env.stripe.requests[before:] if r["path"] == "/v1/payment_intents"]
    assert len(sent) == 1
    form = sent[0]["form"]
    assert (form["amount"], form["currency"], form["customer"], form["payment_method"]) == (
        "2500", "usd", customer, method)
    assert (form["off_session"], form["confirm"]) == ("true", "true")
    assert form["metadata[kind]"] == "auto_topup" and form["metadata[org_id]"] == org.id
    assert sent[0]["idempotencyKey"] == f"alumia-auto-topup:{form['metadata[attempt_id]']}"
    assert sent[0]["authorization"] == f"Bearer {SECRET_KEY}"
    row = await org_row(env.server, org)
    assert row["auto_topup_attempt_id"] == form["metadata[attempt_id]"]
    # More crossings while it is in flight start nothing.
    await calls(env.server, org, 3)
    await wait_for_intents(env, org, 1)
    balance_before = row["balance_microcents"]

    succeeded = event("payment_intent.succeeded", intent)
    results = await asyncio.gather(*(deliver(env.server, succeeded) for _ in range(3)))
    assert sorted(r["duplicate"] for r in results) == [False, True, True]
    assert {r["outcome"] for r in results} == {"credited"}
    again = await deliver(env.server, event("payment_intent.succeeded", intent))  # another event id
    assert again["outcome"] == "already_paid"
    row = await org_row(env.server, org)
    assert row["auto_topup_attempt_id"] is None
    key = f"stripe:payment:{intent['id']}"
    credits = [e for e in await entries(env.server, org) if e["idempotency_key"] == key]
    assert len(credits) == 1 and credits[0]["amount_microcents"] == 25_000_000
    assert credits[0]["type"] == "deposit"
    assert row["cumulative_deposits_cents"] == 5_000 + 2_500
    charged_since = balance_before - (row["balance_microcents"] - 25_000_000)
    assert charged_since >= 0


async def test_failed_payment_clears_the_marker_and_the_next_crossing_tries_again(env: StripeEnv) -> None:
    org = await env.server.new_org()
    await deposit_with_card(env, org)
    await enable(env, org)
    await calls(env.server, org)
    [first] = await wait_for_intents(env, org, 1)
    failed = {**first, "status": "requires_payment_method", "amount_received": 0,
              "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds"}}
    assert (await deliver(env.server, event("payment_intent.payment_failed", failed)))["outcome"] == \
        "auto_topup_failed"
    await wait_for_marker(env, org, present=False)
    # A decline answered at once (402 card_error) clears the marker without waiting for the webhook.
    env.stripe.decline_next = 1
    await calls(env.server, org)
    await wait_for_intents(env, org, 2)
    await wait_for_marker(env, org, present=False)
    await calls(env.server, org)
    third = (await wait_for_intents(env, org, 3))[-1]
    assert third["status"] == "succeeded"
    await wait_for_marker(env, org, present=True)
    deposits = [e for e in await entries(env.server, org) if e["type"] == "deposit"]
    assert len(deposits) == 1  # only the Checkout deposit: nothing credited for failed payments


async def test_with_auto_top_up_off_nothing_is_sent(env: StripeEnv) -> None:
    org = await env.server.new_org()
    await deposit_with_card(env, org)
    async with env.server.api(org.key) as api:
        data(await api.patch(BILLING, json={"autoTopupThresholdCents": 100_000}))
    await calls(env.server, org, 3)
    await enable(env, org)
    async with env.server.api(org.key) as api:
        assert data(await api.patch(BILLING, json={"autoTopupEnabled": False}))["autoTopupEnabled"] is False
    await calls(env.server, org, 3)
    await asyncio.sleep(0.7)
    assert intents_for(env, org) == []
    await org_row(env.server, org)


async def test_a_meter_charge_below_the_threshold_starts_a_top_up_too(env: StripeEnv) -> None:
    org = await env.server.new_org()
    customer, method = await deposit_with_card(env, org)
    await enable(env, org)
    made = run_cli(env.server.env, "apikey", "create", "--org", org.slug, "--scope", "billing:meter",
                   "--json")
    assert made.returncode == 0, made.stderr
    meter_key = json.loads(made.stdout)["key"]
    async with env.server.api(meter_key) as api:
        charged = await api.post("/api/v1/billing/usage-events", json={
            "id": "evt-" + secrets.token_hex(6), "service": "sandbox", "quantity": "3",
            "occurredAt": datetime.now(UTC).isoformat()})
    assert charged.status_code == 201, charged.text
    [intent] = await wait_for_intents(env, org, 1)
    assert (intent["customer"], intent["payment_method"]) == (customer, method)

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
    async_failed_session,
    completed_session,
    event,
    expired_session,
    failed_refund,
    refund,
    signed,
)

from alumia.storage import accounts, ledger
from alumia.storage.tables import ledger_entries, stripe_events, stripe_refunds

from harness import Org, Server, data, error

WEBHOOK = "/api/v1/billing/webhooks/stripe"
DEPOSIT = "/api/v1/billing/deposit"
DEPOSITS = "/api/v1/billing/deposits"
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


async def deposits_by_id(srv: Server, org: Org) -> dict[str, dict]:
    """The org's deposits list (GET /api/v1/billing/deposits), by id."""
    async with srv.api(org.key) as api:
        listed = data(await api.get(DEPOSITS, params={"limit": 100}))
    return {d["id"]: d for d in listed["items"]}


# checkout.session.expired and checkout.session.async_payment_failed


async def test_an_expired_session_is_expired_and_a_late_completion_credits_nothing(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = await checkout(env, org, 3_000)
    assert (await deposits_by_id(env.server, org))[session["id"]]["status"] == "pending"
    expiry = event("checkout.session.expired", expired_session(session))
    assert data(await deliver(env.server, expiry))["outcome"] == "expired"
    replay = data(await deliver(env.server, expiry))
    assert replay["duplicate"] is True and replay["outcome"] == "expired"
    # Another expiry event for the same session (another id) changes nothing either.
    again = event("checkout.session.expired", expired_session(session))
    assert data(await deliver(env.server, again))["outcome"] == "already_expired"
    listed = (await deposits_by_id(env.server, org))[session["id"]]
    assert listed["status"] == "expired" and listed["paidCents"] == 0 and listed["kind"] == "checkout"
    # Stripe cannot complete an expired session; a "paid" completion after it is not credited.
    late = event("checkout.session.completed", completed_session(session))
    assert data(await deliver(env.server, late))["outcome"] == "already_expired"
    assert "reported paid after it was recorded expired" in env.server.log_text()
    balance, deposits, entries = await money(env.server, org)
    assert (balance, deposits, [e["type"] for e in entries]) == (PROMO_MICROCENTS, 0, ["promo_credit"])
    assert (await deposits_by_id(env.server, org))[session["id"]]["status"] == "expired"


async def test_an_expiry_after_the_completion_undoes_nothing(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 2_000))
    assert data(await deliver(env.server, event("checkout.session.completed", session)))["outcome"] == \
        "credited"
    expiry = event("checkout.session.expired", expired_session(session))
    assert data(await deliver(env.server, expiry))["outcome"] == "already_paid"
    listed = (await deposits_by_id(env.server, org))[session["id"]]
    assert listed["status"] == "paid" and listed["paidCents"] == 2_000
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS + 20_000_000, 2_000)


async def test_completion_and_expiry_racing_end_one_way_only(env: StripeEnv) -> None:
    """Whichever commits first wins; the other sees the result. Never both, never credited twice."""
    org = await env.server.new_org()
    sessions = [await checkout(env, org, 1_000) for _ in range(4)]
    deliveries = []
    for session in sessions:
        deliveries += [deliver(env.server, event("checkout.session.completed", completed_session(session))),
                       deliver(env.server, event("checkout.session.expired", expired_session(session)))]
    outcomes = [data(r)["outcome"] for r in await asyncio.gather(*deliveries)]
    listed = await deposits_by_id(env.server, org)
    credited = 0
    for i, session in enumerate(sessions):
        completed, expired = outcomes[2 * i], outcomes[2 * i + 1]
        assert (completed, expired) in {("credited", "already_paid"), ("already_expired", "expired")}
        assert listed[session["id"]]["status"] == ("paid" if completed == "credited" else "expired")
        credited += completed == "credited"
    balance, deposits, entries = await money(env.server, org)
    assert deposits == 1_000 * credited and balance == PROMO_MICROCENTS + 10_000_000 * credited
    assert len([e for e in entries if e["type"] == "deposit"]) == credited


async def test_a_failed_delayed_payment_marks_the_deposit_failed(env: StripeEnv) -> None:
    org = await env.server.new_org()
    started = await checkout(env, org, 1_500)
    unpaid = async_failed_session(started)  # completed with a delayed method: not paid yet
    assert data(await deliver(env.server, event("checkout.session.completed", unpaid)))["outcome"] == \
        "not_paid"
    failure = event("checkout.session.async_payment_failed", unpaid)
    assert data(await deliver(env.server, failure))["outcome"] == "failed"
    assert data(await deliver(env.server, failure))["duplicate"] is True
    assert (await deposits_by_id(env.server, org))[started["id"]]["status"] == "failed"
    # A later "succeeded" contradicts Stripe's own failure: not credited.
    paid = completed_session(started, unpaid["payment_intent"])
    late = event("checkout.session.async_payment_succeeded", paid)
    assert data(await deliver(env.server, late))["outcome"] == "already_failed"
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS, 0)


async def test_expiry_of_an_unknown_session_is_acknowledged_without_effect(env: StripeEnv) -> None:
    org = await env.server.new_org()
    stranger = {"id": "cs_test_" + secrets.token_hex(8), "object": "checkout.session", "amount_total": 900,
                "currency": "usd", "client_reference_id": org.id, "metadata": {"org_id": org.id}}
    assert data(await deliver(env.server, event("checkout.session.expired", expired_session(stranger))))[
        "outcome"] == "unknown_session"
    assert await deposits_by_id(env.server, org) == {}


async def test_the_deposits_list_is_the_orgs_own_and_pages(env: StripeEnv) -> None:
    org, other = await env.server.new_org(), await env.server.new_org()
    member = await env.server.member_key(org, "member")
    ids = [(await checkout(env, org, cents))["id"] for cents in (500, 600, 700)]
    await checkout(env, other, 800)
    async with env.server.api(org.key) as api:
        first = data(await api.get(DEPOSITS, params={"limit": 2}))
        second = data(await api.get(DEPOSITS, params={"limit": 2, "page": 2}))
        for bad in ({"limit": 0}, {"limit": 101}, {"page": 0}, {"page": "x"}):
            error(await api.get(DEPOSITS, params=bad), 422, "VALIDATION_ERROR")
    assert first["hasMore"] is True and second["hasMore"] is False
    listed = first["items"] + second["items"]
    assert sorted(d["id"] for d in listed) == sorted(ids)  # nothing of the other org
    assert {d["amountCents"] for d in listed} == {500, 600, 700}
    assert all(d["status"] == "pending" and d["currency"] == "usd" for d in listed)
    async with env.server.api(member) as as_member:  # members read billing
        assert len(data(await as_member.get(DEPOSITS))["items"]) == 3


# refund.failed, refund.updated / charge.refund.updated with a failed or canceled refund


async def test_a_failed_refund_is_credited_back_exactly_once(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 5_000))
    data(await deliver(env.server, event("checkout.session.completed", session)))
    first = refund(session["payment_intent"], 2_000)
    assert data(await deliver(env.server, event("refund.created", first)))["outcome"] == "refunded"
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS + 30_000_000, 3_000)

    failed = failed_refund(first)
    failure = event("refund.failed", failed)
    # Stripe sends refund.failed beside refund.updated and charge.refund.updated; all at once, replayed.
    burst = [failure, failure, event("refund.updated", failed), event("charge.refund.updated", failed)]
    answers = [data(r) for r in await asyncio.gather(*(deliver(env.server, b) for b in burst))]
    # A replayed event id answers the outcome of its first delivery, marked duplicate.
    firsts = [a["outcome"] for a in answers if not a["duplicate"]]
    assert sorted(firsts) == ["refund_already_failed", "refund_already_failed",
                              "refund_failed_credited_back"], answers
    balance, deposits, entries = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS + 50_000_000, 5_000)
    back = [e for e in entries if e["idempotency_key"] == f"stripe:refund_failed:{first['id']}"]
    assert [(e["type"], e["amount_microcents"]) for e in back] == [("refund", 20_000_000)]
    assert (await deposits_by_id(env.server, org))[session["id"]]["refundedCents"] == 0
    # The money is the org's again, so the whole payment can still be refunded, and no more.
    assert data(await deliver(env.server, event("refund.created", refund(session["payment_intent"],
                                                                          6_000))))["outcome"] == "refunded"
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS, 0)
    async with env.server.api(org.key) as api:
        snap = data(await api.get("/api/v1/billing"))
    assert snap["balance"]["cumulativeDepositsCents"] == 0


async def test_a_capped_refund_that_fails_gives_back_only_what_was_reversed(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 3_000))
    data(await deliver(env.server, event("checkout.session.completed", session)))
    data(await deliver(env.server, event("refund.created", refund(session["payment_intent"], 2_000))))
    over = refund(session["payment_intent"], 4_000)  # capped at the 1,000 left
    data(await deliver(env.server, event("refund.created", over)))
    canceled = event("refund.updated", failed_refund(over, status="canceled"))
    assert data(await deliver(env.server, canceled))["outcome"] == "refund_failed_credited_back"
    balance, deposits, entries = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS + 10_000_000, 1_000)
    assert entries[-1]["amount_microcents"] == 10_000_000
    assert entries[-1]["description"] == "Refund canceled (Stripe): credited back"


async def test_a_refund_failure_never_seen_before_credits_nothing(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 4_000))
    data(await deliver(env.server, event("checkout.session.completed", session)))
    stranger = failed_refund(refund("pi_" + secrets.token_hex(12), 1_000))
    answer = data(await deliver(env.server, event("refund.failed", stranger)))
    assert answer["outcome"] == "refund_failed_unknown"
    assert "was never received here; nothing credited back" in env.server.log_text()
    # Delivered out of order: the failure first, then its refund.created (showing it pending). The
    # refund ended failed, so nothing is debited.
    lost = refund(session["payment_intent"], 1_500)
    assert data(await deliver(env.server, event("refund.failed", failed_refund(lost))))["outcome"] == \
        "refund_failed_unknown"
    assert data(await deliver(env.server, event("refund.created", {**lost, "status": "pending"})))[
        "outcome"] == "refund_already_failed"
    balance, deposits, entries = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS + 40_000_000, 4_000)
    assert [e["type"] for e in entries] == ["promo_credit", "deposit"]
    async with env.server.db.read() as conn:
        row = (await conn.execute(select(stripe_refunds).where(stripe_refunds.c.id == lost["id"]))).first()
    assert row is not None and row.status == "failed"


async def test_a_refund_that_fails_before_its_payment_is_never_applied(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 2_500))
    early = refund(session["payment_intent"], 1_000)
    assert data(await deliver(env.server, event("refund.created", early)))["outcome"] == "refund_unmatched"
    assert data(await deliver(env.server, event("refund.failed", failed_refund(early))))["outcome"] == \
        "refund_failed_unapplied"
    assert data(await deliver(env.server, event("checkout.session.completed", session)))["outcome"] == \
        "credited"
    balance, deposits, entries = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS + 25_000_000, 2_500)
    assert [e["type"] for e in entries] == ["promo_credit", "deposit"]


async def test_refund_updates_that_are_not_failures_change_nothing(env: StripeEnv) -> None:
    org = await env.server.new_org()
    session = completed_session(await checkout(env, org, 2_000))
    data(await deliver(env.server, event("checkout.session.completed", session)))
    pending = {**refund(session["payment_intent"], 500), "status": "pending"}
    data(await deliver(env.server, event("refund.created", pending)))
    for kind in ("refund.updated", "charge.refund.updated"):
        succeeded = event(kind, {**pending, "status": "succeeded"})
        assert data(await deliver(env.server, succeeded))["outcome"] == "ignored"
    balance, deposits, _ = await money(env.server, org)
    assert (balance, deposits) == (PROMO_MICROCENTS + 15_000_000, 1_500)

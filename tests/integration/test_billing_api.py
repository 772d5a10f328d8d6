"""The billing and API-key endpoints: snapshot, pricing, transactions, deposits, org API keys."""

import asyncio

from alumia.storage import accounts, ledger

from harness import Org, Server, data, error

HELLO = [{"role": "user", "content": "hello"}]


async def test_new_org_snapshot_has_the_early_bird_credit_and_an_active_waiver(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        snap = data(await api.get("/api/v1/billing"))
    assert snap["balance"] == {"balanceCents": 1000, "balanceMicrocents": 10_000_000,
                               "cumulativeDepositsCents": 0, "autoTopupEnabled": False,
                               "autoTopupThresholdCents": 500, "autoTopupAmountCents": 2500}
    assert snap["waiver"] == {"active": True, "remainingCents": 10_000}
    assert snap["payment"]["directDepositAvailable"] is True
    assert snap["usage"]["currentMonth"]["requestCount"] == 0
    assert snap["usage"]["currentMonth"]["byokRequestCount"] == 0
    [credit] = snap["recentTransactions"]
    assert credit["type"] == "promo_credit" and credit["amountMicrocents"] == 10_000_000


async def test_deposits_raise_balance_and_cumulative_deposits_and_end_the_waiver(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        first = data(await api.post("/api/v1/billing/deposit", json={"amountCents": 6_000},
                                    headers={"Idempotency-Key": "dep-1"}), 201)
        assert first["balanceMicrocents"] == 70_000_000
        data(await api.post("/api/v1/billing/deposit", json={"amountCents": 4_001}), 201)
        snap = data(await api.get("/api/v1/billing"))
    assert snap["balance"]["cumulativeDepositsCents"] == 10_001
    assert snap["balance"]["balanceMicrocents"] == 10_000_000 + 100_010_000
    assert snap["waiver"] == {"active": False, "remainingCents": 0}


DEPOSIT = "/api/v1/billing/deposit"


async def ledger_state(srv: Server, org: Org) -> tuple[int, int, list[int]]:
    """Balance (microcents), cumulative deposits (cents) and the deposit amounts; balance = Σ entries."""
    async with srv.db.read() as conn:
        row = await accounts.org_by_id(conn, org.id)
        assert row is not None
        assert row["balance_microcents"] == await ledger.sum_entries(conn, org.id)
        entries = await ledger.list_entries(conn, org.id, before_id=None, limit=100)
    return (row["balance_microcents"], row["cumulative_deposits_cents"],
            [e["amount_microcents"] for e in reversed(entries) if e["type"] == "deposit"])


async def test_a_replayed_deposit_answers_like_the_first_and_another_body_is_a_conflict(
        server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        first = await api.post(DEPOSIT, json={"amountCents": 2_500}, headers={"Idempotency-Key": "k-1"})
        body = data(first, 201)
        assert body["amountCents"] == 2_500 and body["balanceMicrocents"] == 35_000_000
        assert body["balanceCents"] == 3_500
        assert body["transaction"]["type"] == "deposit"
        assert body["transaction"]["amountMicrocents"] == 25_000_000
        assert body["transaction"]["balanceAfterMicrocents"] == 35_000_000
        data(await api.post(DEPOSIT, json={"amountCents": 100}), 201)  # the balance moves on
        replay = await api.post(DEPOSIT, json={"amountCents": 2_500}, headers={"Idempotency-Key": "k-1"})
        assert replay.status_code == 201 and replay.json() == first.json()
        error(await api.post(DEPOSIT, json={"amountCents": 2_501}, headers={"Idempotency-Key": "k-1"}),
              409, "CONFLICT")
        listed = data(await api.get("/api/v1/billing/transactions"))["items"]
    assert [t["id"] for t in listed if t["type"] == "deposit"].count(body["transaction"]["id"]) == 1
    assert await ledger_state(server, org) == (36_000_000, 2_600, [25_000_000, 1_000_000])
    # Keys are per org: another org's same key is its own deposit.
    other = await server.new_org()
    async with server.api(other.key) as api:
        theirs = data(await api.post(DEPOSIT, json={"amountCents": 2_500},
                                     headers={"Idempotency-Key": "k-1"}), 201)
    assert theirs["transaction"]["id"] != body["transaction"]["id"]
    assert await ledger_state(server, other) == (35_000_000, 2_500, [25_000_000])


async def test_concurrent_replays_of_a_deposit_credit_once_and_answer_alike(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        answers = await asyncio.gather(*(
            api.post(DEPOSIT, json={"amountCents": 1_234}, headers={"Idempotency-Key": "burst"})
            for _ in range(10)))
    assert [a.status_code for a in answers] == [201] * 10, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1  # byte for byte the same answer
    assert data(answers[0], 201)["balanceMicrocents"] == 22_340_000
    assert await ledger_state(server, org) == (22_340_000, 1_234, [12_340_000])


async def test_concurrent_deposits_with_one_key_and_two_bodies_credit_one_of_them(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        answers = await asyncio.gather(*(
            api.post(DEPOSIT, json={"amountCents": 300 if i % 2 else 700}, headers={"Idempotency-Key": "mix"})
            for i in range(10)))
    won = {a.content for a in answers if a.status_code == 201}
    assert len(won) == 1, [a.text for a in answers]
    winner = data(next(a for a in answers if a.status_code == 201), 201)["amountCents"]
    for sent, answer in zip([300 if i % 2 else 700 for i in range(10)], answers, strict=True):
        if sent == winner:
            assert answer.status_code == 201
        else:
            error(answer, 409, "CONFLICT")
    assert await ledger_state(server, org) == (10_000_000 + winner * 10_000, winner, [winner * 10_000])


async def test_bad_deposits_change_nothing(server: Server) -> None:
    org = await server.new_org()
    member = await server.member_key(org, "member")
    async with server.api(org.key) as api:
        for body in ({"amountCents": 0}, {"amountCents": -5}, {"amountCents": 1_000_001},
                     {"amountCents": "100"}, {"amountCents": 1.5}, {}):
            error(await api.post("/api/v1/billing/deposit", json=body), 422, "VALIDATION_ERROR")
        error(await api.post("/api/v1/billing/deposit", content=b"{",
                             headers={"Content-Type": "application/json"}), 400, "BAD_REQUEST")
        async with server.api(member) as as_member:
            refused = await as_member.post("/api/v1/billing/deposit", json={"amountCents": 100})
            error(refused, 403, "FORBIDDEN")
        snap = data(await api.get("/api/v1/billing"))
    assert snap["balance"]["balanceMicrocents"] == 10_000_000
    assert snap["balance"]["cumulativeDepositsCents"] == 0


async def test_transactions_are_newest_first_and_paginate(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        for cents in (100, 200, 300):
            data(await api.post("/api/v1/billing/deposit", json={"amountCents": cents}), 201)
        page1 = data(await api.get("/api/v1/billing/transactions", params={"limit": 2}))
        page2 = data(await api.get("/api/v1/billing/transactions",
                                   params={"limit": 2, "cursor": page1["nextCursor"]}))
        for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "abc"}):
            error(await api.get("/api/v1/billing/transactions", params=bad), 422, "VALIDATION_ERROR")
    assert [t["amountMicrocents"] for t in page1["items"]] == [3_000_000, 2_000_000]
    assert page1["hasMore"] is True
    assert [t["amountMicrocents"] for t in page2["items"]] == [1_000_000, 10_000_000]
    assert page2["hasMore"] is False and page2["nextCursor"] is None
    assert [t["type"] for t in page2["items"]] == ["deposit", "promo_credit"]
    assert page1["items"][0]["balanceAfterMicrocents"] == 16_000_000


async def test_pricing_lists_every_model_with_exact_fee_inclusive_prices(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        pricing = data(await api.get("/api/v1/billing/pricing"))
    models = {m["id"]: m for m in pricing["models"]}
    sol = models["gpt-5.6-sol"]
    assert sol["provider"] == "openai" and sol["free"] is False
    assert sol["prices"] == {"input": "5", "output": "30", "cachedInput": "0.5", "cacheWrite": "6.25"}
    assert sol["pricesWithFee"] == {"input": "5.275", "output": "31.65", "cachedInput": "0.5275",
                                    "cacheWrite": "6.59375"}
    groq = models["llama-3.3-70b-versatile"]
    assert groq["free"] is True and groq["pricesWithFee"]["output"] == "0"
    assert {m["provider"] for m in pricing["models"]} >= {"anthropic", "gemini", "xiaomi", "cerebras"}


async def test_api_keys_are_listed_by_prefix_and_members_see_only_their_own(server: Server) -> None:
    org = await server.new_org()
    member = await server.member_key(org, "member")
    async with server.api(org.key) as owner, server.api(member) as as_member:
        created = data(await owner.post("/api/v1/api-keys", json={"name": "ci"}), 201)
        assert created["key"].startswith("alm_test_") and created["prefix"] == created["key"][:12]
        listed = await owner.get("/api/v1/api-keys")
        items = data(listed)["items"]
        assert created["key"] not in listed.text
        assert {i["prefix"] for i in items} >= {created["prefix"], member[:12], org.key[:12]}
        mine = data(await as_member.get("/api/v1/api-keys"))["items"]
        assert [i["prefix"] for i in mine] == [member[:12]]
        error(await as_member.delete(f"/api/v1/api-keys/{created['id']}"), 404, "NOT_FOUND")
        error(await owner.post("/api/v1/api-keys", json={"name": ""}), 422, "VALIDATION_ERROR")

    other = await server.new_org()
    async with server.api(other.key) as stranger:
        error(await stranger.delete(f"/api/v1/api-keys/{created['id']}"), 404, "NOT_FOUND")
    async with server.api(created["key"]) as still_valid:
        data(await still_valid.get("/api/v1/billing"))


async def test_unknown_routes_and_missing_auth_use_the_envelope(server: Server) -> None:
    async with server.api(None) as api:
        error(await api.get("/api/v1/billing"), 401, "UNAUTHORIZED")
        error(await api.get("/api/v1/nothing-here"), 404, "NOT_FOUND")

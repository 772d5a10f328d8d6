"""Infrastructure meter events: priced exactly, charged once per id, refused when malformed or not allowed."""

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta

from alumia.storage import ledger

from harness import Org, Server, data, error, fake_key, run_cli

URL = "/api/v1/billing/usage-events"
START = 10_000_000  # the early-bird credit every new org starts with


def meter_key(server: Server, org: Org) -> str:
    """A billing:meter key, made the documented way: `alumia apikey create --scope billing:meter`."""
    made = run_cli(server.env, "apikey", "create", "--org", org.slug, "--scope", "billing:meter",
                   "--name", "meter", "--json")
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert result["scopes"] == ["billing:meter"]
    return result["key"]


def event(service: str, quantity: object, **extra: object) -> dict:
    return {"id": "evt_" + secrets.token_hex(8), "service": service, "quantity": quantity,
            "occurredAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"), **extra}


async def balance(server: Server, org: Org) -> int:
    async with server.api(org.key) as api:
        return data(await api.get("/api/v1/billing"))["balance"]["balanceMicrocents"]


async def assert_balance_is_the_ledger(server: Server, org: Org) -> int:
    async with server.db.read() as conn:
        total = await ledger.sum_entries(conn, org.id)
    assert await balance(server, org) == total
    return total


async def service_entries(server: Server, org: Org) -> list[dict]:
    async with server.db.read() as conn:
        rows = await ledger.list_entries(conn, org.id, before_id=None, limit=1000)
    return [r for r in rows if r["type"] == "service_charge"]


async def test_each_service_is_priced_exactly_by_its_unit(server: Server) -> None:
    org = await server.new_org()
    key = meter_key(server, org)
    # Default prices (microcents per unit): storage 100/GB-hour, browser 2,000/minute,
    # sandbox 1,000/minute, collaboration 100,000/seat-day. Worked by hand:
    cases = [
        ("storage", "730", 73_000),            # a GB for a month: $0.073
        ("storage", "0.005", 1),               # 0.5 microcent rounds half-up to 1
        ("storage", "0.004999", 0),            # 0.4999 rounds down: no ledger entry
        ("browser_session", "12.5", 25_000),
        ("browser_session", "0.00025", 1),     # exactly 0.5
        ("sandbox", "1.234567", 1_235),        # 1234.567
        ("sandbox", 3, 3_000),                 # a JSON integer
        ("sandbox", 0.1, 100),                 # a JSON fraction: read as the decimal 0.1
        ("collaboration", "2", 200_000),
    ]
    async with server.api(key) as api:
        for service, quantity, expected in cases:
            result = data(await api.post(URL, json=event(service, quantity)), 201)
            assert result["chargedMicrocents"] == expected, (service, quantity)
            assert result["service"] == service and result["quantity"] == str(quantity)
    total = sum(c[2] for c in cases)
    assert await assert_balance_is_the_ledger(server, org) == START - total
    entries = await service_entries(server, org)
    assert sorted(-e["amount_microcents"] for e in entries) == sorted(c[2] for c in cases if c[2])


async def test_pricing_lists_service_prices(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        pricing = data(await api.get("/api/v1/billing/pricing"))
    prices = {p["service"]: p for p in pricing["servicePrices"]}
    assert prices["storage"] == {"service": "storage", "unit": "GB-hour", "usd": "0.0001", "microcents": 100,
                                 "perGbMonth": {"usd": "0.073", "microcents": 73_000, "hoursPerMonth": 730}}
    assert prices["browser_session"] == {"service": "browser_session", "unit": "minute", "usd": "0.002",
                                         "microcents": 2_000}
    assert prices["sandbox"]["usd"] == "0.001" and prices["sandbox"]["unit"] == "minute"
    assert prices["collaboration"] == {"service": "collaboration", "unit": "seat-day", "usd": "0.1",
                                       "microcents": 100_000}


async def test_duplicates_charge_once_and_a_changed_body_is_409(server: Server) -> None:
    org = await server.new_org()
    key = meter_key(server, org)
    body = event("sandbox", "10")
    async with server.api(key) as api:
        first = data(await api.post(URL, json=body), 201)
        again = data(await api.post(URL, json=body), 200)
        assert again == first
        # The same meaning spelled differently is the same event.
        same = {**body, "quantity": "10.000", "occurredAt": body["occurredAt"].replace("Z", "+00:00")}
        assert data(await api.post(URL, json=same), 200) == first
        for change in ({"quantity": "11"}, {"service": "browser_session"}, {"projectId": "p1"},
                       {"occurredAt": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}):
            error(await api.post(URL, json={**body, **change}), 409, "CONFLICT")
    assert len(await service_entries(server, org)) == 1
    assert await assert_balance_is_the_ledger(server, org) == START - 10_000

    # Ids are per org: another org may use the same id.
    other = await server.new_org()
    async with server.api(meter_key(server, other)) as api:
        data(await api.post(URL, json=body), 201)


async def test_concurrent_duplicates_charge_once(server: Server) -> None:
    org = await server.new_org()
    key = meter_key(server, org)
    body = event("browser_session", "7.5")
    async with server.api(key) as api:
        responses = await asyncio.gather(*(api.post(URL, json=body) for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 9 + [201], [r.text for r in responses]
    assert len({json.dumps(r.json()["data"], sort_keys=True) for r in responses}) == 1
    assert [-e["amount_microcents"] for e in await service_entries(server, org)] == [15_000]
    assert await assert_balance_is_the_ledger(server, org) == START - 15_000

    # Ten concurrent different bodies under one id: one charge, the others 409.
    body2 = event("sandbox", "1")
    async with server.api(key) as api:
        responses = await asyncio.gather(*(api.post(URL, json={**body2, "quantity": str(n + 1)})
                                           for n in range(10)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9
    assert len(await service_entries(server, org)) == 2
    await assert_balance_is_the_ledger(server, org)


async def test_bad_events_are_422_and_charge_nothing(server: Server) -> None:
    org = await server.new_org()
    other = await server.new_org()
    async with server.api(other.key) as api:
        [foreign_agent] = data(await api.get("/api/v1/agents"))["items"]
    key = meter_key(server, org)
    now = datetime.now(UTC)
    bad = [
        {"service": "gpu"}, {"service": None}, {"quantity": "0"}, {"quantity": -1}, {"quantity": "abc"},
        {"quantity": "1.0000001"}, {"quantity": True}, {"quantity": None}, {"quantity": "NaN"},
        {"occurredAt": (now - timedelta(days=35, minutes=1)).isoformat()},
        {"occurredAt": (now + timedelta(minutes=10)).isoformat()},
        {"occurredAt": "2026-01-01T00:00:00"}, {"occurredAt": "yesterday"}, {"occurredAt": 1700000000},
        {"agentId": foreign_agent["id"]}, {"agentId": "no-such-agent"}, {"agentId": 5},
        {"projectId": ""}, {"projectId": "p" * 101}, {"id": ""}, {"id": "has space"}, {"id": None},
    ]
    async with server.api(key) as api:
        for change in bad:
            error(await api.post(URL, json={**event("sandbox", "1"), **change}), 422, "VALIDATION_ERROR")
        error(await api.post(URL, content=b"[1]", headers={"Content-Type": "application/json"}),
              400, "BAD_REQUEST")
        # Within the limits: 34 days old, and 2 minutes ahead (clock skew).
        for when in (now - timedelta(days=34), now + timedelta(minutes=2)):
            data(await api.post(URL, json=event("sandbox", "1", occurredAt=when.isoformat())), 201)
    assert len(await service_entries(server, org)) == 2
    assert await assert_balance_is_the_ledger(server, org) == START - 2_000


async def test_ordinary_keys_cannot_report_usage_events(server: Server) -> None:
    org = await server.new_org()
    admin = await server.member_key(org, "admin")
    async with server.api(org.key) as owner, server.api(admin) as as_admin:
        error(await owner.post(URL, json=event("sandbox", "1")), 403, "FORBIDDEN")
        error(await as_admin.post(URL, json=event("sandbox", "1")), 403, "FORBIDDEN")
        created = data(await owner.post("/api/v1/api-keys", json={"name": "ci"}), 201)
    async with server.api(created["key"]) as api:
        error(await api.post(URL, json=event("sandbox", "1")), 403, "FORBIDDEN")
    async with server.api(None) as anonymous:
        error(await anonymous.post(URL, json=event("sandbox", "1")), 401, "UNAUTHORIZED")
    assert await service_entries(server, org) == []
    bad_scope = run_cli(server.env, "apikey", "create", "--org", org.slug, "--scope", "billing:everything")
    assert bad_scope.returncode == 1 and "scopes" in bad_scope.stderr


async def test_byok_keys_make_no_difference_and_charges_may_go_below_zero(server: Server) -> None:
    plain, with_byok = await server.new_org(), await server.new_org()
    async with server.api(with_byok.key) as api:
        for provider, prefix in (("openai", "sk-proj-test-"), ("anthropic", "sk-ant-api03-test-")):
            data(await api.post("/api/v1/billing/byok-keys",
                                json={"provider": provider, "apiKey": fake_key(prefix)}), 201)
        [ala] = data(await api.get("/api/v1/agents"))["items"]
    charges = {}
    for org in (plain, with_byok):
        async with server.api(meter_key(server, org)) as api:
            agent = {"agentId": ala["id"]} if org is with_byok else {}
            # 150 seat-days = $15.00, more than the $10.00 balance: charged anyway (work already done).
            body = event("collaboration", "150", projectId="proj-a", **agent)
            result = data(await api.post(URL, json=body), 201)
            charges[org.slug] = result["chargedMicrocents"]
        assert await assert_balance_is_the_ledger(server, org) == START - 15_000_000
    assert set(charges.values()) == {15_000_000}


async def test_a_meter_only_key_reports_events_but_cannot_use_the_management_api(server: Server) -> None:
    org = await server.new_org()
    key = meter_key(server, org)
    async with server.api(key) as api:
        for path in ("/api/v1/billing", "/api/v1/billing/byok-keys", "/api/v1/agents"):
            refused = await api.get(path)
            assert refused.status_code == 403, path
            assert refused.json()["error"]["code"] == "FORBIDDEN"


async def test_quantity_is_a_json_number_or_a_plain_ascii_decimal_string(server: Server) -> None:
    org = await server.new_org()
    key = meter_key(server, org)
    async with server.api(key) as api:
        for text in (" 1", "1 ", "1\n", "+1", "1e3", "1E3", "1_000", "1.", ".5", "0x10", "\uff11",
                     "\u0663", "1\u00a0", "Infinity"):
            message = error(await api.post(URL, json=event("sandbox", text)), 422, "VALIDATION_ERROR")
            assert message == 'quantity must be a JSON number or a string of digits with an optional ' \
                              'fraction, like "12.5"', text
        # JSON numbers, exponent included, are numbers: 1e3 sandbox minutes at 1,000 microcents each.
        raw = json.dumps(event("sandbox", "QUANTITY")).replace('"QUANTITY"', "1e3").encode()
        accepted = data(await api.post(URL, content=raw, headers={"Content-Type": "application/json"}), 201)
        assert accepted["chargedMicrocents"] == 1_000_000 and accepted["quantity"] == "1000"
        assert data(await api.post(URL, json=event("sandbox", "2.5")), 201)["chargedMicrocents"] == 2_500
    assert await assert_balance_is_the_ledger(server, org) == START - 1_002_500

"""Spending reports and the CSV export: every figure equals the ledger (and the usage records) exactly."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import orjson
from sqlalchemy import func, select

from alumia.storage.tables import ledger_entries, usage_records

from harness import Org, Server, data, fake_key, run_cli

HELLO = [{"role": "user", "content": "hello"}]
MONEY = ("platformChargesMicrocents", "byokValueMicrocents", "serviceChargesMicrocents", "spentMicrocents")


async def chat(server: Server, org: Org, model: str, agent: str | None) -> None:
    headers = {"Content-Type": "application/json", **({"X-Alumia-Agent": agent} if agent else {})}
    async with server.api(org.key) as api:
        response = await api.post("/v1/chat/completions", headers=headers,
                                  content=orjson.dumps({"model": model, "messages": HELLO}))
    assert response.status_code == 200, response.text


async def meter(api: httpx.AsyncClient, n: int, service: str, quantity: str, **extra: str) -> int:
    body = {"id": f"evt-{n}", "service": service, "quantity": quantity,
            "occurredAt": datetime.now(UTC).isoformat(), **extra}
    return data(await api.post("/api/v1/billing/usage-events", json=body), 201)["chargedMicrocents"]


async def ledger_sums(server: Server, org: Org, since: datetime, until: datetime) -> dict[str, int]:
    """Sum of ledger entries per type, straight from the table."""
    e = ledger_entries.c
    async with server.db.read() as conn:
        rows = await conn.execute(select(e.type, func.sum(e.amount_microcents)).where(
            e.org_id == org.id, e.created_at >= since, e.created_at < until).group_by(e.type))
        return {row[0]: int(row[1]) for row in rows}


async def usage_sums(server: Server, org: Org, key: str) -> dict:
    """(charged, byok list value) per group of the usage records, straight from the table."""
    u = usage_records.c
    column = u[key]
    async with server.db.read() as conn:
        rows = await conn.execute(
            select(column, u.byok, func.sum(u.charged_microcents), func.sum(u.cost_microcents), func.count())
            .where(u.org_id == org.id).group_by(column, u.byok))
        sums: dict = {}
        for group, byok, charged, cost, count in rows:
            platform, value, requests = sums.get(group, (0, 0, 0))
            sums[group] = (platform + int(charged), value + (int(cost) if byok else 0), requests + int(count))
        return sums


def assert_items_add_up(report: dict) -> None:
    for column in (*MONEY, "requestCount", "byokRequestCount", "meterEventCount"):
        assert sum(i[column] for i in report["items"]) == report["totals"][column], column
    for item in report["items"]:
        assert item["spentMicrocents"] == item["platformChargesMicrocents"] + item["serviceChargesMicrocents"]


async def test_reports_equal_the_ledger_to_the_microcent(server: Server) -> None:
    org = await server.new_org(deposit_cents=20_000)  # beyond the waiver: the fee applies
    async with server.api(org.key) as api:
        bot = data(await api.post("/api/v1/agents", json={"name": "Bot", "model": "claude-haiku-4-5"}), 201)
        [ala] = [a for a in data(await api.get("/api/v1/agents"))["items"] if a["slug"] == "ala"]
        data(await api.post("/api/v1/billing/byok-keys",
                            json={"provider": "openai", "apiKey": fake_key("sk-proj-test-")}), 201)
    # Platform calls (anthropic), BYOK calls (openai), for two agents and for none.
    haiku = "claude-haiku-4-5"
    for model, agent in [(haiku, "ala"), (haiku, "bot"), (haiku, "bot"), (haiku, None),
                         ("gpt-5.6-luna", "ala"), ("gpt-5.6-luna", "bot"), ("gpt-5.6-luna", None),
                         ("gpt-5.6-sol", "bot")]:
        await chat(server, org, model, agent)
    made = run_cli(server.env, "apikey", "create", "--org", org.slug, "--scope", "billing:meter", "--json")
    assert made.returncode == 0, made.stderr
    async with server.api(json.loads(made.stdout)["key"]) as api:
        services = {
            "a": await meter(api, 1, "storage", "100.5", agentId=bot["id"], projectId="proj-x"),
            "b": await meter(api, 2, "sandbox", "3.333333", agentId=ala["id"], projectId="proj-x"),
            "c": await meter(api, 3, "browser_session", "2", projectId="proj-y"),
            "d": await meter(api, 4, "collaboration", "1", agentId=bot["id"]),
        }
    today = datetime.now(UTC).date()
    span = {"from": (today - timedelta(days=2)).isoformat(), "to": today.isoformat()}
    since = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=2)
    until = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)

    async with server.api(org.key) as api:
        overview = data(await api.get("/api/v1/billing/spending", params=span))
        by_model = data(await api.get("/api/v1/billing/spending/by-model", params=span))
        by_agent = data(await api.get("/api/v1/billing/spending/by-agent", params=span))
        by_project = data(await api.get("/api/v1/billing/spending/by-project", params=span))
        this_month = data(await api.get("/api/v1/billing/spending"))
        exported = await api.get("/api/v1/billing/transactions.csv", params=span)

    ledger = await ledger_sums(server, org, since, until)
    platform, service = -ledger["usage_charge"], -ledger["service_charge"]
    assert platform > 0 and service == sum(services.values()) > 0
    totals = overview["totals"]
    # The property the reports promise: platform + service charges == −(usage + service ledger entries).
    assert totals["platformChargesMicrocents"] + totals["serviceChargesMicrocents"] == platform + service
    assert totals["platformChargesMicrocents"] == platform and totals["serviceChargesMicrocents"] == service
    by_model_usage = await usage_sums(server, org, "model")
    assert totals["byokValueMicrocents"] == sum(v[1] for v in by_model_usage.values()) > 0
    assert totals["requestCount"] == 8 and totals["byokRequestCount"] == 4 and totals["meterEventCount"] == 4
    for report in (by_model, by_agent, by_project):
        assert {k: report["totals"][k] for k in MONEY} == {k: totals[k] for k in MONEY}
        assert_items_add_up(report)
    if today.day >= 3:  # the default range is this month, which then holds the whole test range
        assert {k: this_month["totals"][k] for k in MONEY} == {k: totals[k] for k in MONEY}

    # The daily series: every day of the range, zeros filled, adding up to the totals.
    days = [(today - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    assert [d["date"] for d in overview["daily"]] == days
    assert overview["daily"][0]["spentMicrocents"] == overview["daily"][1]["spentMicrocents"] == 0
    for column in MONEY:
        assert sum(d[column] for d in overview["daily"]) == totals[column]
    assert {s["service"]: s["serviceChargesMicrocents"] for s in overview["byService"]} == {
        "storage": services["a"], "sandbox": services["b"], "browser_session": services["c"],
        "collaboration": services["d"]}
    assert [m["model"] for m in overview["topModels"]][:1] == ["claude-haiku-4-5"]
    assert len(overview["topAgents"]) == 3

    # Per model: platform charges and BYOK value equal the usage records; services under null.
    models = {i["model"]: i for i in by_model["items"]}
    for model, (charged, value, requests) in by_model_usage.items():
        assert (models[model]["platformChargesMicrocents"], models[model]["byokValueMicrocents"],
                models[model]["requestCount"]) == (charged, value, requests)
        assert models[model]["serviceChargesMicrocents"] == 0
    assert models["gpt-5.6-luna"]["platformChargesMicrocents"] == 0
    assert models[None]["serviceChargesMicrocents"] == service and models[None]["requestCount"] == 0

    # Per agent: calls from the usage records, service charges from the events.
    agents = {i["agentId"]: i for i in by_agent["items"]}
    agent_usage = await usage_sums(server, org, "agent_id")
    meter_by_agent = {bot["id"]: services["a"] + services["d"], ala["id"]: services["b"], None: services["c"]}
    for agent_id, (charged, value, requests) in agent_usage.items():
        row = agents[agent_id]
        assert (row["platformChargesMicrocents"], row["byokValueMicrocents"], row["requestCount"]) == (
            charged, value, requests)
        assert row["serviceChargesMicrocents"] == meter_by_agent[agent_id]
    assert agents[bot["id"]]["agentName"] == "Bot" and agents[ala["id"]]["agentName"] == "Ala"
    assert agents[None]["agentName"] is None

    projects = {i["projectId"]: i for i in by_project["items"]}
    assert projects["proj-x"]["serviceChargesMicrocents"] == services["a"] + services["b"]
    assert projects["proj-y"]["serviceChargesMicrocents"] == services["c"]
    assert projects[None]["serviceChargesMicrocents"] == services["d"]
    assert projects[None]["platformChargesMicrocents"] == platform and projects[None]["requestCount"] == 8
    assert projects["proj-x"]["requestCount"] == 0

    # The CSV: a header, every ledger entry of the range, amounts exact.
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert list(rows[0].keys()) == ["id", "createdAt", "type", "amountMicrocents", "amountUsd",
                                    "balanceAfterMicrocents", "description", "requestId"]
    by_type: dict[str, int] = {}
    for row in rows:
        amount = int(row["amountMicrocents"])
        assert Decimal(row["amountUsd"]) * 1_000_000 == amount
        by_type[row["type"]] = by_type.get(row["type"], 0) + amount
    assert by_type == ledger
    assert -(by_type["usage_charge"] + by_type["service_charge"]) == totals["platformChargesMicrocents"] + \
        totals["serviceChargesMicrocents"]
    assert [int(r["id"]) for r in rows] == sorted(int(r["id"]) for r in rows)
    async with server.api(org.key) as api:
        snapshot = data(await api.get("/api/v1/billing"))
    assert int(rows[-1]["balanceAfterMicrocents"]) == snapshot["balance"]["balanceMicrocents"]


async def test_ranges_are_validated_and_empty_days_are_zero(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        for params in ({"from": "2026-13-01"}, {"from": "20260101"}, {"to": "tomorrow"},
                       {"from": "2026-02-10", "to": "2026-02-01"},
                       {"from": "2024-01-01", "to": "2025-01-01"}):  # 367 days
            for path in ("/spending", "/spending/by-model", "/spending/by-agent", "/spending/by-project",
                         "/transactions.csv"):
                response = await api.get("/api/v1/billing" + path, params=params)
                assert response.status_code == 422, (path, params, response.text)
                assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        leap_year = {"from": "2024-01-01", "to": "2024-12-31"}
        year = data(await api.get("/api/v1/billing/spending", params=leap_year))
        assert len(year["daily"]) == 366 and year["totals"]["spentMicrocents"] == 0
        assert year["topModels"] == [] and year["topAgents"] == []
        empty = await api.get("/api/v1/billing/transactions.csv", params=leap_year)
        assert list(csv.reader(io.StringIO(empty.text))) == [
            ["id", "createdAt", "type", "amountMicrocents", "amountUsd", "balanceAfterMicrocents",
             "description", "requestId"]]
        default = data(await api.get("/api/v1/billing/spending"))
    today = datetime.now(UTC).date()
    assert (default["from"], default["to"]) == (today.replace(day=1).isoformat(), today.isoformat())

"""The context cache (services/context_cache.py) keeps every promise the database read made.

Two `alumia serve` processes share one database (SQLite and PostgreSQL): process B serves an org's calls,
so its cache holds the org's context, while every change is made through process A. The very next call
on B after A's response (no sleep in between) sees the change: a BYOK key deactivated, added or replaced;
an API key revoked; an agent deactivated or deleted; a deposit that passes the fee-waiver threshold
(from then on the fee applies).

A third, in-process app on the same database shows the cache is actually used (its context reads are
counted by the cache object itself), and the generation is read to show that the writes every call
makes (charges, holds, last-used times) never move it, while each change a context depends on does.
"""

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import select

from alumia.app import create_app
from alumia.config import Settings
from alumia.container import Services
from alumia.sim.env import sim_env
from alumia.sim.server import SimServer
from alumia.storage.tables import cache_generation, usage_records

from harness import PG_ADMIN_DSN, Org, Server, data, fake_key

MODEL = "gpt-5.6-luna"  # an openai model: routed byok when the org has an active openai key
DEAR = "gpt-5.6-sol"  # dear enough that the fee on one small call is not rounded to nothing


def anthropic_key() -> str:
    return fake_key("sk-ant-api03-test-")


@pytest.fixture(scope="module")
async def second(server: Server, sim: SimServer) -> AsyncIterator[Server]:
    """Process B: another `alumia serve` on the same database (and data directory) as `server`."""
    srv = Server(database_url=server.env["ALUMIA_DATABASE_URL"], data_dir=Path(server.env["ALUMIA_DATA_DIR"]),
                 sim_env=sim_env(sim.host, sim.port), label="cache-b")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        await srv.db.dispose()


def body(model: str = MODEL) -> bytes:
    return orjson.dumps({"model": model, "max_tokens": 32,
                         "messages": [{"role": "user", "content": "hello"}]})


async def chat(client: httpx.AsyncClient, agent: str | None = None, model: str = MODEL) -> httpx.Response:
    headers = {"Content-Type": "application/json", **({"X-Alumia-Agent": agent} if agent else {})}
    return await client.post("/v1/chat/completions", content=body(model), headers=headers)


def refused(response: httpx.Response, status: int, code: str) -> None:
    """A gateway error (OpenAI's envelope) with this status and code."""
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def ok_via(response: httpx.Response, route: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-alumia-route"] == route


def last_key_sha(sim: SimServer) -> str:
    """The SHA-256 of the key the upstream received with the latest chat call."""
    return [call for call in sim.calls() if call.get("model") == MODEL][-1]["keySha256"]


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def generation(server: Server) -> int:
    async with server.db.read() as conn:
        return (await conn.execute(select(cache_generation.c.value))).scalar_one()


async def usage_record(server: Server, request_id: str) -> dict:
    """The usage record of a call (committed before the response's last byte; polled briefly anyway)."""
    for _ in range(50):
        async with server.db.read() as conn:
            row = (await conn.execute(select(usage_records).where(usage_records.c.id == request_id))).first()
        if row is not None:
            return dict(row._mapping)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no usage record for {request_id}")


async def test_byok_key_changes_reach_the_next_call_on_another_process(
        server: Server, second: Server, sim: SimServer) -> None:
    org = await server.new_org()
    first, then, replacing = fake_key(), fake_key(), fake_key()
    async with server.api(org.key) as a, second.api(org.key) as b:
        added = data(await a.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": first}),
                     201)
        for _ in range(3):  # B now remembers the org's context with this key
            ok_via(await chat(b), "byok")
            assert last_key_sha(sim) == sha(first)

        data(await a.delete(f"/api/v1/billing/byok-keys/{added['id']}"))
        ok_via(await chat(b), "platform")
        assert last_key_sha(sim) == sha(second.platform_key("openai"))

        data(await a.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": then}), 201)
        ok_via(await chat(b), "byok")
        assert last_key_sha(sim) == sha(then)

        # Adding a key for a provider that has one replaces it.
        data(await a.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": replacing}), 201)
        ok_via(await chat(b), "byok")
        assert last_key_sha(sim) == sha(replacing)


async def test_a_revoked_api_key_is_refused_by_the_next_call_on_another_process(
        server: Server, second: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as a:
        created = data(await a.post("/api/v1/api-keys", json={"name": "soon revoked"}), 201)
        async with second.api(created["key"]) as b:
            for _ in range(3):
                ok_via(await chat(b), "platform")
            data(await a.delete(f"/api/v1/api-keys/{created['id']}"))
            refused(await chat(b), 401, "UNAUTHORIZED")
            # Still refused: a refusal is never remembered as a context either.
            refused(await chat(b), 401, "UNAUTHORIZED")


async def test_agent_changes_reach_the_next_call_on_another_process(server: Server, second: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as a, second.api(org.key) as b:
        bot = data(await a.post("/api/v1/agents", json={"name": "Bot", "model": MODEL}), 201)
        for _ in range(3):
            ok_via(await chat(b, "bot"), "platform")
            ok_via(await chat(b, bot["id"]), "platform")

        data(await a.patch("/api/v1/agents/bot", json={"isActive": False}))
        refused(await chat(b, "bot"), 409, "CONFLICT")
        refused(await chat(b, bot["id"]), 409, "CONFLICT")

        data(await a.patch("/api/v1/agents/bot", json={"isActive": True}))
        ok_via(await chat(b, "bot"), "platform")

        data(await a.delete(f"/api/v1/agents/{bot['id']}"))
        refused(await chat(b, "bot"), 404, "NOT_FOUND")
        refused(await chat(b, bot["id"]), 404, "NOT_FOUND")


async def test_a_deposit_past_the_waiver_threshold_starts_the_fee_on_the_next_call_on_another_process(
        server: Server, second: Server) -> None:
    # The fee is waived until cumulative deposits exceed the threshold (domain/pricing.py FeePolicy);
    # the early-bird credit pays for these calls and is not a deposit.
    org = await server.new_org()
    fee_bps, threshold = server.settings.fee_bps, server.settings.waiver_threshold_cents
    async with server.api(org.key) as a, second.api(org.key) as b:
        for _ in range(3):
            waived = await chat(b, model=DEAR)
            ok_via(waived, "platform")
        before = await usage_record(server, waived.headers["x-alumia-request-id"])
        assert before["cost_microcents"] > 0
        assert (before["fee_microcents"], before["charged_microcents"]) == (0, before["cost_microcents"])

        deposit = await a.post("/api/v1/billing/deposit", json={"amountCents": threshold + 1})
        assert deposit.status_code == 201, deposit.text
        charged = await chat(b, model=DEAR)
        ok_via(charged, "platform")
        after = await usage_record(server, charged.headers["x-alumia-request-id"])
        cost = after["cost_microcents"]
        assert cost == before["cost_microcents"]  # the same call, the same list price
        fee = int((Decimal(cost) * fee_bps / 10_000).quantize(Decimal(1), ROUND_HALF_UP))
        assert fee > 0
        assert (after["fee_microcents"], after["charged_microcents"]) == (fee, cost + fee)


@asynccontextmanager
async def in_process(server: Server) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """The app in this process on the server's database, its lifespan entered: a third process whose
    cache object the test can read."""
    app = create_app(Settings.from_env(server.env))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test",
                                     timeout=30) as client:
            yield client, app.state.services


def auth(org: Org, agent: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {org.key}", **({"X-Alumia-Agent": agent} if agent else {})}


async def test_calls_are_admitted_from_memory_and_calls_do_not_invalidate(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as a:
        data(await a.post("/api/v1/billing/byok-keys",
                          json={"provider": "anthropic", "apiKey": anthropic_key()}), 201)
    start = await generation(server)
    async with in_process(server) as (client, gw):
        contexts = gw.contexts
        assert contexts is not None
        calls = 20
        for _ in range(calls):  # platform calls: a hold, a charge and a last-used update each
            ok_via(await client.post("/v1/chat/completions", content=body(), headers=auth(org)), "platform")
        for _ in range(3):  # BYOK calls: the key's last-used time is written
            response = await client.post("/v1/chat/completions", headers=auth(org), content=orjson.dumps({
                "model": "claude-haiku-4-5", "max_tokens": 16,
                "messages": [{"role": "user", "content": "hi"}]}))
            ok_via(response, "byok")
        assert contexts.loads == 1
        assert contexts.hits == calls + 2
        assert contexts.watch.reads == calls + 3  # sequential calls: one generation read each

        # Concurrent calls share generation reads, and the org's context (already remembered).
        reads = contexts.watch.reads
        burst = await asyncio.gather(*(client.post("/v1/chat/completions", content=body(), headers=auth(org))
                                       for _ in range(calls)))
        refusals = [r.text for r in burst if r.status_code != 200]
        assert refusals == []
        assert contexts.loads == 1
        assert contexts.watch.reads - reads < calls

        # Concurrent first calls of a caller share one context read.
        other = await server.new_org()
        loads = contexts.loads
        burst = await asyncio.gather(*(client.post("/v1/chat/completions", content=body(),
                                                   headers=auth(other)) for _ in range(10)))
        refusals = [r.text for r in burst if r.status_code != 200]
        assert refusals == [] and len(burst) == 10
        assert contexts.loads == loads + 1

        # Unknown keys and unknown agents are never remembered: they cannot fill the cache.
        remembered = len(contexts)
        for _ in range(5):
            stranger = {"Authorization": "Bearer alm_" + secrets.token_urlsafe(32)}
            refused(await client.post("/v1/chat/completions", content=body(), headers=stranger),
                    401, "UNAUTHORIZED")
            refused(await client.post("/v1/chat/completions", content=body(),
                                      headers=auth(org, "nobody-" + secrets.token_hex(4))), 404, "NOT_FOUND")
        assert len(contexts) == remembered
    # Neither charges, holds nor last-used times moved the generation; creating `other` did (its keys).
    assert await generation(server) > start
    between = await generation(server)
    async with in_process(server) as (client, gw):
        for _ in range(5):
            ok_via(await client.post("/v1/chat/completions", content=body(), headers=auth(org)), "platform")
    assert await generation(server) == between


async def test_the_generation_moves_with_each_change_a_context_depends_on(server: Server) -> None:
    org = await server.new_org()

    async def moved(change: object) -> bool:
        before = await generation(server)
        await change  # type: ignore[misc]
        return await generation(server) > before

    async with server.api(org.key) as a:
        async def ok(response: object, status: int = 200) -> None:
            data(await response, status)  # type: ignore[misc]

        key = data(await a.post("/api/v1/api-keys", json={"name": "x"}), 201)
        added = data(await a.post("/api/v1/billing/byok-keys",
                                  json={"provider": "openai", "apiKey": fake_key()}), 201)
        assert await moved(ok(a.post("/api/v1/api-keys", json={"name": "y"}), 201))
        assert await moved(ok(a.delete(f"/api/v1/api-keys/{key['id']}")))
        assert await moved(ok(a.post("/api/v1/billing/byok-keys",
                                     json={"provider": "anthropic", "apiKey": anthropic_key()}), 201))
        assert await moved(ok(a.delete(f"/api/v1/billing/byok-keys/{added['id']}")))
        assert await moved(ok(a.post("/api/v1/agents", json={"name": "Bot", "model": MODEL}), 201))
        assert await moved(ok(a.patch("/api/v1/agents/bot", json={"name": "Robot"})))
        assert await moved(ok(a.patch("/api/v1/billing", json={"autoTopupThresholdCents": 700})))
        assert await moved(ok(a.post("/api/v1/billing/deposit", json={"amountCents": 500}), 201))
        # Settings that no context holds leave it alone.
        assert not await moved(ok(a.patch("/api/v1/billing", json={"autoTopupAmountCents": 3000})))
        # So does deactivating a key that is already inactive (nothing changes).
        assert not await moved(ok(a.delete(f"/api/v1/billing/byok-keys/{added['id']}")))


async def test_a_cut_generation_connection_is_opened_again_without_refusing_a_call(server: Server) -> None:
    if not server.env["ALUMIA_DATABASE_URL"].startswith("postgresql"):
        pytest.skip("SQLite has no server to cut the connection")
    org = await server.new_org()
    database = server.env["ALUMIA_DATABASE_URL"].rsplit("/", 1)[1]
    async with server.api(org.key) as a:
        ok_via(await chat(a), "platform")  # the server's generation connection is open
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            cut = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND application_name = 'alumia-generation'", database)
        finally:
            await admin.close()
        assert cut >= 1
        ok_via(await chat(a), "platform")

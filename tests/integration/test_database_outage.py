"""The database going away, on PostgreSQL: before a call nothing is sent or charged; after the provider
has answered, the client still gets its answer and the journal charges the call, once, when it is back.

The outage is real: the test database stops accepting connections and its sessions are terminated
(`ALTER DATABASE ... ALLOW_CONNECTIONS false` + `pg_terminate_backend`), which is what a server that
restarts or a network that drops looks like to the gateway's pool.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import select

from alumia.sim.env import sim_env
from alumia.sim.server import SimServer
from alumia.storage.db import Database
from alumia.storage.tables import holds, orgs, usage_records

from conformance import validate
from harness import PG_ADMIN_DSN, Org, Server, fake_key, running_server


@pytest.fixture(scope="module")
async def pg_server(sim: SimServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A server on its own PostgreSQL database, sweeping (so retrying failed metering) every second."""
    env = {**sim_env(sim.host, sim.port), "ALUMIA_HOLD_SWEEP_SECONDS": "1"}
    async with running_server("postgres", tmp_path_factory.mktemp("outage"), env, "outage") as srv:
        yield srv


@asynccontextmanager
async def outage(server: Server, org: Org) -> AsyncIterator[None]:
    """The server's database refuses connections and has none open, until the block ends.

    After it, the server's pools still hold the connections that were cut: the request that finds
    one is answered 503 (never a 500) and the pool starts afresh, which `_recovered` waits for.
    """
    name = server.env["ALUMIA_DATABASE_URL"].rsplit("/", 1)[1]
    await server.db.dispose()
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await _recovered(server, org)


async def _recovered(server: Server, org: Org) -> None:
    async with server.api(org.key) as api:
        for _ in range(20):
            answer = await api.get("/api/v1/billing")
            if answer.status_code == 200:
                return
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert answer.headers["retry-after"] == "2"
    raise AssertionError("the server did not recover from the outage")


async def money(db: Database, org_id: str) -> tuple[int, int]:
    async with db.read() as conn:
        row = (await conn.execute(select(orgs.c.balance_microcents, orgs.c.held_microcents)
                                  .where(orgs.c.id == org_id))).one()
    return row.balance_microcents, row.held_microcents


async def records(db: Database, org_id: str) -> list:
    async with db.read() as conn:
        return (await conn.execute(select(usage_records).where(usage_records.c.org_id == org_id))).all()


def chat_body(text: str, **extra: object) -> bytes:
    return orjson.dumps({"model": "gpt-5.6-luna", "messages": [{"role": "user", "content": text}],
                         "max_tokens": 32, **extra})


async def test_a_call_while_the_database_is_down_is_a_503_and_nothing_moves(
        pg_server: Server, sim: SimServer) -> None:
    org = await pg_server.new_org(deposit_cents=1000)
    start = await money(pg_server.db, org.id)
    received = len(sim.calls())
    async with outage(pg_server, org), httpx.AsyncClient(base_url=pg_server.base_url, timeout=30) as api:
        chat = await api.post("/v1/chat/completions", content=chat_body("hello"),
                              headers={"Authorization": f"Bearer {org.key}"})
        messages = await api.post("/v1/messages", headers={"x-api-key": org.key}, json={
            "model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 503, chat.text
    body = chat.json()
    validate("ErrorResponse", body)
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert chat.headers["retry-after"] == "2" and chat.headers["x-alumia-request-id"]
    assert messages.status_code == 503, messages.text
    assert messages.json()["type"] == "error" and messages.headers["retry-after"] == "2"
    assert len(sim.calls()) == received  # nothing went to a provider
    await pg_server.db.dispose()
    assert await money(pg_server.db, org.id) == start
    assert await records(pg_server.db, org.id) == []


async def _answered_during_outage(server: Server, sim: SimServer, org: Org) -> httpx.Response:
    """A call whose provider answers while the database is down (held in the simulator until then)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as api:
        pending = asyncio.create_task(api.post("/v1/chat/completions", content=chat_body("hi [[sim:hold]]"),
                                               headers={"Authorization": f"Bearer {org.key}"}))
        for _ in range(500):
            if sim.held() == 1:
                break
            await asyncio.sleep(0.02)
        assert sim.held() == 1
        async with outage(server, org):
            assert sim.release() == 1
            response = await pending
        return response


async def eventually_recorded(db: Database, org_id: str) -> list:
    for _ in range(300):
        await db.dispose()
        try:
            if rows := await records(db, org_id):
                return rows
        except Exception:  # the pool may still hold a connection from before the outage
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the journaled call was never metered")


async def test_an_answered_platform_call_is_delivered_and_charged_once_when_the_database_returns(
        pg_server: Server, sim: SimServer) -> None:
    org = await pg_server.new_org(deposit_cents=1000)
    balance, _ = await money(pg_server.db, org.id)
    response = await _answered_during_outage(pg_server, sim, org)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["choices"][0]["message"]["content"]
    [record] = await eventually_recorded(pg_server.db, org.id)
    assert record.status == "ok" and record.charged_microcents > 0
    await asyncio.sleep(2.5)  # two more sweeps: a retried call is never charged again
    assert len(await records(pg_server.db, org.id)) == 1
    assert await money(pg_server.db, org.id) == (balance - record.charged_microcents, 0)
    async with pg_server.db.read() as conn:
        hold = (await conn.execute(select(holds).where(holds.c.id == record.id))).one()
    assert (hold.status, hold.charged_microcents) == ("settled", record.charged_microcents)


async def test_an_answered_byok_call_is_delivered_and_recorded_when_the_database_returns(
        pg_server: Server, sim: SimServer) -> None:
    org = await pg_server.new_org()
    async with pg_server.api(org.key) as api:
        added = await api.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": fake_key()})
        assert added.status_code == 201, added.text
    response = await _answered_during_outage(pg_server, sim, org)
    assert response.status_code == 200, response.text
    assert response.headers["x-alumia-route"] == "byok"
    [record] = await eventually_recorded(pg_server.db, org.id)
    assert (record.route, record.status, record.charged_microcents) == ("byok", "ok", 0)

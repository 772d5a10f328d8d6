"""Through the gateway, the simulator receives what the gateway priced and held for: the held limit in
the field that provider reads and no other, and one model, the priced one.

Each call goes through a running `alumia serve` (SQLite and PostgreSQL) to the simulator, whose
`/_sim/calls` entries record the fields it received (`alumia.sim.calls.received_fields`).
"""

import time

import orjson
from sqlalchemy import select

from alumia.sim.server import SimServer
from alumia.storage.tables import usage_records

from harness import Org, Server

# 4 words of prefix, the provider/model word, then the 8 echoed words: far more than one token.
PROMPT = "one two three four five six seven eight"


async def call(server: Server, org: Org, raw: bytes) -> dict:
    async with server.api(org.key) as api:
        response = await api.post("/v1/chat/completions", content=raw,
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def received(sim: SimServer, provider: str, since: float) -> list[dict]:
    return [c["received"] for c in sim.calls() if c["provider"] == provider and c["time"] >= since
            and c["path"].endswith((":generateContent", "/chat/completions"))]


async def record(server: Server, org: Org) -> dict:
    async with server.db.read() as conn:
        row = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id)
                                  .order_by(usage_records.c.created_at.desc()).limit(1))).first()
    assert row is not None
    return dict(row._mapping)


async def test_deepseek_gets_the_held_limit_as_max_tokens_only(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    since = time.time()
    raw = orjson.dumps({"model": "deepseek-v4-pro", "max_completion_tokens": 1, "max_tokens": 2064,
                        "messages": [{"role": "user", "content": PROMPT}]})
    body = await call(server, org, raw)
    assert received(sim, "deepseek", since) == [{"models": ["deepseek-v4-pro"], "max_tokens": 1}]
    assert body["choices"][0]["message"]["content"] == "Simulated"
    assert body["choices"][0]["finish_reason"] == "length"
    assert (await record(server, org))["output_tokens"] == 1


async def test_a_duplicate_model_key_reaches_the_provider_as_the_priced_model(server: Server,
                                                                              sim: SimServer) -> None:
    org = await server.new_org()
    since = time.time()
    raw = (b'{"model":"gpt-5.6-sol","model":"gpt-5.6-luna","max_completion_tokens":3,'
           b'"messages":[{"role":"user","content":"hi"}]}')
    body = await call(server, org, raw)
    assert received(sim, "openai", since) == [{"models": ["gpt-5.6-luna"], "max_completion_tokens": 3}]
    assert (await record(server, org))["model"] == "gpt-5.6-luna"
    assert body["model"] == "gpt-5.6-luna"


async def test_gemini_gets_the_models_limit_when_the_client_set_none(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    since = time.time()
    await call(server, org, orjson.dumps({"model": "gemini-3.5-flash",
                                          "messages": [{"role": "user", "content": "hi"}]}))
    assert received(sim, "gemini", since) == [{"maxOutputTokens": 65536}]

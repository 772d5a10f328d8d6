"""POST /v1/embeddings over real HTTP, against `alumia serve` on SQLite and PostgreSQL and the simulator.

The official `openai` client is used unchanged. Expected numbers are worked out here: tokens by the
simulator's documented rule (alumia.sim.embeddings: the words of each text), vectors by its seeded
generator, prices read straight from models.toml, and money as round_half_up(tokens x input price),
plus round_half_up(cost x 550 / 10000) once deposits pass $100.
"""

import base64
import hashlib
import secrets
import struct
import tomllib
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

import openai
import pytest
from sqlalchemy import select

from alumia.clock import utcnow
from alumia.sim.embeddings import vector
from alumia.sim.server import SimServer
from alumia.storage.call_writes import Reserve
from alumia.storage.tables import byok_keys, ledger_entries, usage_records

import conformance
from harness import Org, Server, data, fake_key

MODELS = {m["id"]: m for m in tomllib.loads(
    resources.files("alumia.domain.data").joinpath("models.toml").read_text())["model"]}
# Three texts of 50 words each: 150 tokens by the simulator's rule.
TEXTS = [" ".join(f"w{i}x{j}" for j in range(50)) for i in range(3)]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def charge(model: str, tokens: int, *, fee: bool) -> int:
    cost = (tokens * Decimal(MODELS[model]["input"])).quantize(Decimal(1), ROUND_HALF_UP)
    return int(cost + ((cost * 550 / Decimal(10_000)).quantize(Decimal(1), ROUND_HALF_UP) if fee else 0))


def client(server: Server, org: Org, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key, max_retries=0,
                              default_headers=headers or None)


def floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def as_float32(values: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


async def balance(server: Server, org: Org) -> int:
    async with server.api(org.key) as api:
        return (await api.get("/api/v1/billing")).json()["data"]["balance"]["balanceMicrocents"]


async def the_record(server: Server, org: Org) -> tuple[dict, list[int]]:
    """The org's one usage record and the amounts of its ledger entries for that call."""
    async with server.db.read() as conn:
        record = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).one()
        entries = (await conn.execute(select(ledger_entries.c.amount_microcents)
                                      .where(ledger_entries.c.request_id == record.id))).all()
    return dict(record._mapping), [e[0] for e in entries]


@pytest.mark.parametrize("deposit_cents", [0, 20_000], ids=["fee-waived", "fee-applied"])
async def test_the_openai_client_embeds_on_the_platform_route_for_the_exact_price(
        server: Server, sim: SimServer, deposit_cents: int) -> None:
    org = await server.new_org(deposit_cents=deposit_cents)
    before_balance = await balance(server, org)
    before = len(sim.calls())
    answer = await client(server, org).embeddings.create(model="text-embedding-3-large", input=TEXTS)
    # The client asked for base64 (its default) and decoded it; OpenAI answers base64 itself.
    assert [len(d.embedding) for d in answer.data] == [3072] * 3
    assert answer.data[1].embedding == as_float32(vector("text-embedding-3-large", TEXTS[1], 3072))
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (150, 150)
    [seen] = sim.calls()[before:]
    assert seen["path"] == "/openai/v1/embeddings"
    assert seen["keySha256"] == sha(server.platform_key("openai"))
    assert seen["received"] == {"encoding_format": "base64", "models": ["text-embedding-3-large"],
                                "inputs": 3}
    expected = charge("text-embedding-3-large", 150, fee=deposit_cents > 10_000)  # 150 x 0.13 = 19.5 -> 20
    assert expected == (21 if deposit_cents else 20)
    record, entries = await the_record(server, org)
    assert (record["model"], record["provider"], record["route"], record["byok"]) == (
        "text-embedding-3-large", "openai", "platform", False)
    assert (record["input_tokens"], record["output_tokens"], record["usage_estimated"]) == (150, 0, False)
    assert record["charged_microcents"] == expected and entries == [-expected]
    assert await balance(server, org) == before_balance - expected


async def test_a_float_answer_conforms_to_openais_schema(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        response = await api.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                          "input": "hello there", "encoding_format": "float"})
    assert response.status_code == 200, response.text
    assert response.headers["x-alumia-route"] == "platform"
    body = response.json()
    conformance.validate("CreateEmbeddingResponse", body)
    assert body["data"][0]["embedding"] == vector("text-embedding-3-small", "hello there", 1536)
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


async def test_dimensions_and_explicit_base64_reach_the_provider_and_come_back(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    answer = await client(server, org).embeddings.create(
        model="openai/text-embedding-3-small", input=[[101, 202, 303], [7]], dimensions=256,
        encoding_format="base64", user="u-1")
    # Asked explicitly, the client hands back the base64 string as it came.
    assert isinstance(answer.data[0].embedding, str)
    expected = as_float32(vector("text-embedding-3-small", [101, 202, 303], 256))
    assert floats(answer.data[0].embedding) == expected
    assert answer.usage.prompt_tokens == 4  # token ids counted one each
    [seen] = sim.calls()[before:]
    assert seen["received"] == {"dimensions": 256, "encoding_format": "base64", "user": "u-1",
                                "models": ["text-embedding-3-small"], "inputs": 2}


async def test_a_provider_that_only_sends_floats_is_asked_for_floats_and_the_gateway_encodes(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    answer = await client(server, org).embeddings.create(model="text-embedding-v4", input=["alpha beta"],
                                                         dimensions=64)
    assert answer.data[0].embedding == as_float32(vector("text-embedding-v4", "alpha beta", 64))
    [seen] = sim.calls()[before:]
    assert seen["provider"] == "qwen" and "encoding_format" not in seen["received"]
    assert seen["received"]["dimensions"] == 64


async def test_a_gemini_embedding_end_to_end_is_translated_estimated_and_charged(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    texts = ["abcdefgh", "é" * 5]  # 8 bytes -> 2 tokens; 10 bytes -> 3 tokens (ceil(bytes / 4))
    answer = await client(server, org).embeddings.create(model="gemini/gemini-embedding-001", input=texts,
                                                         dimensions=768)
    assert answer.model == "gemini-embedding-001"
    assert [d.index for d in answer.data] == [0, 1]
    assert answer.data[1].embedding == as_float32(vector("gemini-embedding-001", texts[1], 768))
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (5, 5)
    [seen] = sim.calls()[before:]
    assert seen["path"] == "/gemini/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert seen["keySha256"] == sha(server.platform_key("gemini"))
    assert seen["received"] == {"inputs": 2, "outputDimensionality": [768, 768],
                                "models": ["models/gemini-embedding-001"] * 2}
    async with server.api(org.key) as api:
        raw = await api.post("/v1/embeddings", json={"model": "gemini-embedding-001", "input": "abcd",
                                                     "encoding_format": "float"})
    conformance.validate("CreateEmbeddingResponse", raw.json())
    assert len(raw.json()["data"][0]["embedding"]) == 3072  # the model's default
    async with server.db.read() as conn:
        records = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id)
                                      .order_by(usage_records.c.created_at))).all()
    # 5 tokens x $0.15/MTok = 0.75 -> 1 microcent; 1 token -> 0.15 -> 0; both recorded as estimated.
    assert [(r.input_tokens, r.usage_estimated, r.charged_microcents) for r in records] == [
        (5, True, charge("gemini-embedding-001", 5, fee=False)), (1, True, 0)]
    assert charge("gemini-embedding-001", 5, fee=False) == 1


async def test_byok_embeddings_go_with_the_orgs_key_and_charge_nothing(server: Server,
                                                                       sim: SimServer) -> None:
    org = await server.new_org()
    key = fake_key()
    async with server.api(org.key) as api:
        added = data(await api.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": key}),
                     201)
    before_balance = await balance(server, org)
    before = len(sim.calls())
    async with server.api(org.key) as api:
        response = await api.post("/v1/embeddings", json={"model": "text-embedding-3-large", "input": TEXTS})
    assert response.status_code == 200 and response.headers["x-alumia-route"] == "byok"
    [seen] = sim.calls()[before:]
    assert seen["keySha256"] == sha(key)
    record, entries = await the_record(server, org)
    assert (record["route"], record["byok"], record["byok_key_id"]) == ("byok", True, added["id"])
    # The list-price value is recorded for the org to see; the balance pays nothing.
    assert (record["cost_microcents"], record["fee_microcents"], record["charged_microcents"]) == (20, 0, 0)
    assert entries == []
    assert await balance(server, org) == before_balance
    async with server.db.read() as conn:
        used = (await conn.execute(select(byok_keys.c.last_used_at)
                                   .where(byok_keys.c.id == added["id"]))).scalar_one()
    assert used is not None


async def test_a_call_the_balance_cannot_cover_is_refused_before_anything_goes_upstream(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()  # $10.00 early-bird credit: hold all of it but 100 microcents
    now = utcnow()
    assert (await server.db.calls.reserve(Reserve(
        hold_id="req_fill_" + secrets.token_hex(6), org_id=org.id, amount=10_000_000 - 100, now=now,
        expires_at=now + timedelta(hours=1)))).admitted
    before = len(sim.calls())
    body = {"model": "text-embedding-3-large", "input": "x" * 2_000}  # about 2,060 bytes x 0.13: > 100
    async with server.api(org.key) as api:
        response = await api.post("/v1/embeddings", json=body)
        assert response.status_code == 402, response.text
        assert response.json()["error"]["code"] == "PAYMENT_REQUIRED"
        assert response.headers["x-alumia-route"] == "platform"
        # A cheaper call whose worst case fits is still admitted: 36 bytes x 0.02 < 100.
        small = await api.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
        assert small.status_code == 200, small.text
    assert [c["received"]["inputs"] for c in sim.calls()[before:]] == [1]  # only the call that fitted


async def test_the_call_is_attributed_to_the_agent_named_in_the_header(server: Server,
                                                                       sim: SimServer) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        agent = data(await api.post("/api/v1/agents", json={"name": "Indexer", "model": "gpt-5.6-luna"}), 201)
    await client(server, org, **{"X-Alumia-Agent": agent["id"]}).embeddings.create(
        model="mistral-embed", input="index me")
    record, _ = await the_record(server, org)
    assert (record["agent_id"], record["provider"]) == (agent["id"], "mistral")


async def test_an_embedding_model_on_chat_and_a_chat_model_on_embeddings_are_refused(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    async with server.api(org.key) as api:
        chat = await api.post("/v1/chat/completions", json={
            "model": "text-embedding-3-small", "messages": [{"role": "user", "content": "hi"}]})
        messages = await api.post("/v1/messages", json={
            "model": "gemini-embedding-001", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]})
        embed = await api.post("/v1/embeddings", json={"model": "gpt-5.6-luna", "input": "hi"})
    assert chat.status_code == 400 and "/v1/embeddings" in chat.json()["error"]["message"]
    conformance.validate("ErrorResponse", chat.json())
    assert messages.status_code == 400 and "/v1/embeddings" in messages.json()["error"]["message"]
    assert embed.status_code == 400 and "/v1/chat/completions" in embed.json()["error"]["message"]
    conformance.validate("ErrorResponse", embed.json())
    assert len(sim.calls()) == before


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    (b"{nope", 400, "BAD_REQUEST", None),
    ({"model": "text-embedding-3-small"}, 422, "VALIDATION_ERROR", "input"),
    ({"model": "text-embedding-3-small", "input": ""}, 422, "VALIDATION_ERROR", "input"),
    ({"model": "text-embedding-3-small", "input": ["a", 1]}, 422, "VALIDATION_ERROR", "input[1]"),
    ({"model": "text-embedding-3-small", "input": ["a"] * 2049}, 422, "VALIDATION_ERROR", "input"),
    ({"model": "text-embedding-v4", "input": ["a"] * 11}, 422, "VALIDATION_ERROR", "input"),
    ({"model": "text-embedding-3-small", "input": "a", "dimensions": 0}, 422, "VALIDATION_ERROR",
     "dimensions"),
    ({"model": "text-embedding-3-small", "input": "a", "dimensions": 4096}, 422, "VALIDATION_ERROR",
     "dimensions"),
    ({"model": "mistral-embed", "input": "a", "dimensions": 256}, 422, "VALIDATION_ERROR", "dimensions"),
    ({"model": "gemini-embedding-001", "input": [1, 2]}, 422, "VALIDATION_ERROR", "input"),
    ({"model": "text-embedding-3-small", "input": "a", "encoding_format": "int8"}, 422, "VALIDATION_ERROR",
     "encoding_format"),
    ({"model": "text-embedding-3-small", "input": "a", "input_type": "query"}, 422, "VALIDATION_ERROR",
     "input_type"),
    ({"model": "no-such-embedder", "input": "a"}, 404, "NOT_FOUND", None),
], ids=["bad-json", "no-input", "empty-input", "mixed-input", "too-many", "over-model-cap", "zero-dims",
        "dims-too-big", "dims-not-taken", "tokens-to-gemini", "bad-encoding", "unknown-field",
        "unknown-model"])
async def test_bad_requests_get_a_clear_error_and_change_nothing(
        server: Server, sim: SimServer, body: dict | bytes, status: int, code: str,
        field: str | None) -> None:
    org = await server.new_org()
    before, before_balance = len(sim.calls()), await balance(server, org)
    async with server.api(org.key) as api:
        if isinstance(body, bytes):
            response = await api.post("/v1/embeddings", content=body,
                                      headers={"Content-Type": "application/json"})
        else:
            response = await api.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    conformance.validate("ErrorResponse", response.json())
    assert error["code"] == code
    if field:
        assert error["message"].startswith(f"{field}: ")
    assert len(sim.calls()) == before
    assert await balance(server, org) == before_balance


async def test_a_stranger_is_refused_before_the_body_is_read(server: Server, sim: SimServer) -> None:
    async with server.api(None) as api:
        response = await api.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_the_model_list_says_each_models_kind(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        listed = (await api.get("/v1/models")).json()["data"]
        one = (await api.get("/v1/models/openai/text-embedding-3-small")).json()
    kinds = {m["id"]: m["kind"] for m in listed}
    assert kinds["text-embedding-3-small"] == kinds["gemini-embedding-001"] == "embedding"
    assert kinds["gpt-5.6-luna"] == "chat"
    assert {m["id"] for m in listed if m["kind"] == "embedding"} == {
        i for i, m in MODELS.items() if m.get("kind") == "embedding"}
    for model in [*listed, one]:
        conformance.validate("Model", model)
    assert (one["id"], one["kind"]) == ("text-embedding-3-small", "embedding")
    page = await client(server, org).models.list()
    assert {m.id for m in page.data} == set(kinds)

"""Embeddings against a scripted upstream (hostile.py): what is held before anything is sent, provider
errors and their redaction, answers that cannot be read, and a provider that over-reports its tokens."""

import asyncio
import hashlib

import orjson
from aiohttp import web
from sqlalchemy import select

from alumia.domain.catalog import load_catalog
from alumia.domain.pricing import FeePolicy, embedding_reservation
from alumia.storage.tables import holds

from harness import fake_key
from hostile import Gateway, Upstream, auth

CATALOG = load_catalog()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def answer(count: int, prompt_tokens: int | None, dims: int = 3) -> web.Response:
    data = [{"object": "embedding", "index": i, "embedding": [0.5] * dims} for i in range(count)]
    body: dict = {"object": "list", "model": "text-embedding-3-large", "data": data}
    if prompt_tokens is not None:
        body["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return web.json_response(body)


async def test_the_worst_case_is_held_before_the_request_is_sent(gw: Gateway, upstream: Upstream) -> None:
    org = await gw.new_org(deposit_cents=20_000)  # the fee applies
    seen: list[int] = []

    async def script(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        async with gw.db.read() as conn:  # while the provider has the request: the hold is in place
            seen.extend((await conn.execute(select(holds.c.amount_microcents)
                                            .where(holds.c.org_id == org.id))).scalars())
        return answer(1, 7)

    upstream.script = script
    raw = orjson.dumps({"model": "text-embedding-3-large", "input": "x" * 5_000})
    response = await gw.client.post("/v1/embeddings", content=raw, headers=auth(org))
    assert response.status_code == 200, response.text
    large = CATALOG.model("text-embedding-3-large")
    assert large is not None
    held = embedding_reservation(large.prices, len(raw), FeePolicy(), 20_000).total_microcents
    # round_half_up(5,045 bytes x 0.13 = 655.85) + round_half_up(656 x 5.5% = 36.08)
    assert len(raw) == 5_045 and seen == [held] and held == 656 + 36
    record, hold, entries = await gw.record_hold_entries(org)
    # The charge is the reported 7 tokens x 0.13 = 0.91 -> 1, and the 5.5% fee on 1 rounds to 0.
    assert (record["input_tokens"], record["charged_microcents"], entries) == (7, 1, [-1])
    assert hold is not None and hold["status"] == "settled"


async def test_a_provider_reporting_more_tokens_than_the_body_could_hold_is_charged_the_hold(
        gw: Gateway, upstream: Upstream) -> None:
    org = await gw.new_org()

    async def script(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        return answer(1, 10_000_000)

    upstream.script = script
    raw = orjson.dumps({"model": "text-embedding-3-large", "input": "hello"})
    response = await gw.client.post("/v1/embeddings", content=raw, headers=auth(org))
    assert response.status_code == 200
    record, _hold, entries = await gw.record_hold_entries(org)
    large = CATALOG.model("text-embedding-3-large")
    assert large is not None
    held = embedding_reservation(large.prices, len(raw), FeePolicy(), 0).total_microcents
    assert record["charged_microcents"] == held and entries == [-held]
    assert record["cost_microcents"] == 1_300_000  # the list price of what was reported, for the record


async def test_a_byok_key_the_provider_rejects_is_named_redacted_and_never_retried_on_the_platform(
        gw: Gateway, upstream: Upstream) -> None:
    org = await gw.new_org()
    key = fake_key()
    added = await gw.client.post("/api/v1/billing/byok-keys", json={"provider": "mistral", "apiKey": key},
                                 headers=auth(org))
    assert added.status_code == 201, added.text
    sent: list[str] = []

    async def script(request: web.Request, provider: str, key_sent: str) -> web.StreamResponse:
        sent.append(key_sent)
        return web.json_response({"message": f"Unauthorized: bad key {key_sent}"}, status=401)

    upstream.script = script
    response = await gw.client.post("/v1/embeddings", json={"model": "mistral-embed", "input": "hi"},
                                    headers=auth(org))
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "BYOK_KEY_REJECTED" and "mistral" in error["message"]
    assert key not in response.text and key[-12:] not in response.text
    assert sent == [key]  # once, with the org's key: never again with the platform's
    record, hold, entries = await gw.record_hold_entries(org)
    assert (record["route"], record["status"], record["charged_microcents"], hold, entries) == (
        "byok", "error", 0, None, [])


async def test_an_answer_without_one_embedding_per_input_is_a_502_and_releases_the_hold(
        gw: Gateway, upstream: Upstream) -> None:
    org = await gw.new_org()

    async def script(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        return answer(1, 3)  # two inputs were sent

    upstream.script = script
    response = await gw.client.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                            "input": ["a", "b"]}, headers=auth(org))
    assert response.status_code == 502
    record, hold, entries = await gw.record_hold_entries(org)
    assert (record["status"], record["charged_microcents"], entries) == ("error", 0, [])
    assert hold is not None and hold["status"] in ("released", "settled")
    assert hold["amount_microcents"] > 0


async def test_gemini_is_sent_batch_embed_contents_and_its_rate_limit_maps_as_for_chat(
        gw: Gateway, upstream: Upstream) -> None:
    org = await gw.new_org()
    received: list[tuple[str, dict, str]] = []

    async def script(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        received.append((request.path, await request.json(), key))
        await asyncio.sleep(0)
        return web.json_response({"error": {"code": 429, "message": "Resource exhausted", "status":
                                            "RESOURCE_EXHAUSTED", "details": [
                                                {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                 "retryDelay": "7s"}]}}, status=429)

    upstream.script = script
    response = await gw.client.post("/v1/embeddings", json={"model": "gemini-embedding-001",
                                                            "input": ["a b", "c"], "dimensions": 128},
                                    headers=auth(org))
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "TOO_MANY_REQUESTS"
    [(path, body, key)] = received
    assert path == "/gemini/models/gemini-embedding-001:batchEmbedContents"
    assert key == gw.platform_key("gemini")
    one = {"model": "models/gemini-embedding-001", "outputDimensionality": 128}
    assert body == {"requests": [{**one, "content": {"parts": [{"text": t}]}} for t in ("a b", "c")]}

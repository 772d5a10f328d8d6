"""The gateway's answers: routes, refusals before anything goes upstream, errors, and OpenAI conformance."""

import hashlib

import httpx
import openai
import orjson
import pytest

from alumia.sim.server import SimServer
from alumia.storage import ledger

import conformance
from harness import Org, Server, fake_key

HELLO = [{"role": "user", "content": "hello"}]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def post_chat(server: Server, key: str | None, body: dict | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    async with server.api(key) as api:
        return await api.post("/v1/chat/completions", content=content,
                              headers={"Content-Type": "application/json"})


async def snapshot(server: Server, org: Org) -> dict:
    async with server.api(org.key) as api:
        return (await api.get("/api/v1/billing")).json()["data"]


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    conformance.validate("ErrorResponse", body)
    assert body["error"]["code"] == code
    assert response.headers["x-alumia-request-id"].startswith("req_")
    return body["error"]


async def test_a_platform_call_the_balance_cannot_cover_is_refused_before_upstream(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before_calls = len(sim.calls())
    before = await snapshot(server, org)
    # The $10 early-bird credit cannot cover 1,000,000 output tokens of gpt-5.6-sol ($30).
    response = await post_chat(server, org.key, {"model": "gpt-5.6-sol", "messages": HELLO,
                                                 "max_tokens": 1_000_000})
    error = assert_openai_error(response, 402, "PAYMENT_REQUIRED")
    assert "insufficient" in error["message"]
    assert len(sim.calls()) == before_calls
    after = await snapshot(server, org)
    assert after["balance"] == before["balance"]
    assert after["usage"]["currentMonth"]["requestCount"] == before["usage"]["currentMonth"]["requestCount"]


async def test_byok_and_free_calls_are_never_refused_for_balance(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        added = await api.post("/api/v1/billing/byok-keys",
                               json={"provider": "openai", "apiKey": fake_key()})
    assert added.status_code == 201
    byok = await post_chat(server, org.key, {"model": "gpt-5.6-sol", "messages": HELLO,
                                             "max_tokens": 1_000_000})
    assert byok.status_code == 200 and byok.headers["x-alumia-route"] == "byok"
    free = await post_chat(server, org.key, {"model": "llama-3.3-70b-versatile", "messages": HELLO,
                                             "max_tokens": 10_000_000})
    assert free.status_code == 200 and free.headers["x-alumia-route"] == "free"


async def test_free_provider_needs_no_key_and_costs_nothing(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before = await snapshot(server, org)
    response = await post_chat(server, org.key, {"model": "llama-3.3-70b-versatile", "messages": HELLO})
    assert response.status_code == 200
    assert response.headers["x-alumia-route"] == "free"
    assert sim.calls()[-1]["keySha256"] == sha(server.platform_key("groq"))
    after = await snapshot(server, org)
    assert after["balance"] == before["balance"]
    month = after["usage"]["currentMonth"]
    assert month["requestCount"] == 1 and month["byokRequestCount"] == 0 and month["spentMicrocents"] == 0


async def test_a_byok_key_for_a_free_provider_is_used_and_counts_as_byok(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    groq_key = fake_key("gsk_test")
    async with server.api(org.key) as api:
        assert (await api.post("/api/v1/billing/byok-keys",
                               json={"provider": "groq", "apiKey": groq_key})).status_code == 201
    response = await post_chat(server, org.key, {"model": "openai/gpt-oss-20b", "messages": HELLO})
    assert response.headers["x-alumia-route"] == "byok"
    assert sim.calls()[-1]["keySha256"] == sha(groq_key)
    assert (await snapshot(server, org))["usage"]["currentMonth"]["byokRequestCount"] == 1


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{not json", 400, "BAD_REQUEST"),
    (b"[1, 2]", 400, "BAD_REQUEST"),
    ({"messages": HELLO}, 422, "VALIDATION_ERROR"),
    ({"model": "gpt-5.6-luna"}, 422, "VALIDATION_ERROR"),
    ({"model": "gpt-5.6-luna", "messages": []}, 422, "VALIDATION_ERROR"),
    ({"model": "gpt-5.6-luna", "messages": HELLO, "stream": "yes"}, 422, "VALIDATION_ERROR"),
    ({"model": "gpt-5.6-luna", "messages": HELLO, "max_tokens": 0}, 422, "VALIDATION_ERROR"),
    ({"model": "no-such-model", "messages": HELLO}, 404, "NOT_FOUND"),
], ids=["bad-json", "array", "no-model", "no-messages", "empty-messages", "stream-not-bool",
        "zero-max-tokens", "unknown-model"])
async def test_bad_requests_get_a_clear_error_and_send_nothing(
        server: Server, sim: SimServer, body: dict | bytes, status: int, code: str) -> None:
    org = await server.new_org()
    before_calls = len(sim.calls())
    assert_openai_error(await post_chat(server, org.key, body), status, code)
    assert len(sim.calls()) == before_calls


async def test_unauthenticated_and_revoked_keys_are_refused(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    body = {"model": "gpt-5.6-luna", "messages": HELLO}
    assert_openai_error(await post_chat(server, None, body), 401, "UNAUTHORIZED")
    assert_openai_error(await post_chat(server, "alm_test_" + "0" * 48, body), 401, "UNAUTHORIZED")
    async with server.api(org.key) as api:
        created = (await api.post("/api/v1/api-keys", json={"name": "short-lived"})).json()["data"]
        assert (await post_chat(server, created["key"], body)).status_code == 200
        assert (await api.delete(f"/api/v1/api-keys/{created['id']}")).status_code == 200
    assert_openai_error(await post_chat(server, created["key"], body), 401, "UNAUTHORIZED")


async def test_non_streaming_answer_conforms_to_openai(server: Server) -> None:
    org = await server.new_org()
    response = await post_chat(server, org.key, {"model": "gpt-5.6-luna", "messages": HELLO})
    assert response.status_code == 200
    conformance.validate("CreateChatCompletionResponse", response.json())


@pytest.mark.parametrize("include_usage", [True, False])
async def test_stream_conforms_and_passes_usage_only_when_asked(server: Server, include_usage: bool) -> None:
    org = await server.new_org()
    body: dict = {"model": "gpt-5.6-luna", "messages": HELLO, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response = await post_chat(server, org.key, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    chunks = [orjson.loads(f) for f in frames[:-1]]
    for chunk in chunks:
        conformance.validate("CreateChatCompletionStreamResponse", chunk)
    with_usage = [c for c in chunks if c.get("usage")]
    assert len(with_usage) == (1 if include_usage else 0)
    # Either way the gateway metered the call from the upstream's usage.
    month = (await snapshot(server, org))["usage"]["currentMonth"]
    assert month["requestCount"] == 1 and month["outputTokens"] > 0


async def test_models_list_conforms_and_names_the_provider(server: Server) -> None:
    org = await server.new_org()
    async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key) as oa:
        models = {m.id: m.owned_by async for m in oa.models.list()}
    assert models["claude-sonnet-5"] == "anthropic"
    assert models["llama-3.3-70b-versatile"] == "groq"
    assert len(set(models.values())) == 14
    async with server.api(org.key) as api:
        conformance.validate("ListModelsResponse", (await api.get("/v1/models")).json())


async def test_balance_always_equals_the_sum_of_ledger_entries(server: Server) -> None:
    org = await server.new_org(deposit_cents=12_345)
    for _ in range(3):
        response = await post_chat(server, org.key, {"model": "gpt-5.6-sol", "messages": HELLO})
        assert response.status_code == 200
    data = await snapshot(server, org)
    async with server.db.read() as conn:
        total = await ledger.sum_entries(conn, org.id)
    assert data["balance"]["balanceMicrocents"] == total
    assert total == 10_000_000 + 123_450_000 - data["usage"]["allTime"]["spentMicrocents"]
    assert data["balance"]["balanceCents"] == total // 10_000
    assert data["balance"]["cumulativeDepositsCents"] == 12_345


@pytest.mark.parametrize("body", [b"{not json", {"model": "no-such-model", "messages": HELLO},
                                  {"model": "gemini-3.5-flash", "messages": HELLO}],
                         ids=["bad-json", "unknown-model", "valid-body"])
async def test_a_stranger_gets_401_before_anything_about_the_request(server: Server,
                                                                    body: dict | bytes) -> None:
    assert_openai_error(await post_chat(server, "alm_test_" + "f" * 48, body), 401, "UNAUTHORIZED")


async def test_errors_after_routing_carry_the_route(server: Server) -> None:
    org = await server.new_org()
    response = await post_chat(server, org.key, {"model": "gpt-5.6-sol", "messages": HELLO,
                                                 "max_tokens": 1_000_000})
    assert_openai_error(response, 402, "PAYMENT_REQUIRED")
    assert response.headers["x-alumia-route"] == "platform"

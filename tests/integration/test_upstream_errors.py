"""Provider errors as the gateway's caller sees them, and calls the provider cut short.

Faults are scripted per call through the simulator's directive in the last user message.
"""

import hashlib

import httpx
import orjson
import pytest
from sqlalchemy import select

from alumia.storage.tables import usage_records

from harness import Org, Server

MODELS = {"openai": "gpt-5.6-luna", "anthropic": "claude-haiku-4-5", "gemini": "gemini-3.7-flash",
          "minimax": "MiniMax-M2.7", "zhipu": "glm-5.3"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def post(server: Server, org: Org, model: str, text: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    async with server.api(org.key) as api:
        return await api.post("/v1/chat/completions", content=orjson.dumps(body),
                              headers={"Content-Type": "application/json"})


async def last_record(server: Server, org: Org) -> dict:
    async with server.db.read() as conn:
        row = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id)
                                  .order_by(usage_records.c.created_at.desc()).limit(1))).first()
    assert row is not None
    return dict(row._mapping)


async def balance(server: Server, org: Org) -> int:
    async with server.api(org.key) as api:
        return (await api.get("/api/v1/billing")).json()["data"]["balance"]["balanceMicrocents"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "zhipu", "minimax"])
async def test_rate_limits_become_429_with_a_retry_after(server: Server, provider: str) -> None:
    org = await server.new_org()
    response = await post(server, org, MODELS[provider], "hello [[sim:status=429]]")
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "TOO_MANY_REQUESTS"
    # Header from retry-after (OpenAI format, Anthropic), Gemini's RetryInfo "2s", or our default 1.
    assert response.headers["retry-after"] == {"gemini": "2"}.get(provider, "1")
    assert response.headers["x-alumia-route"] == "platform"
    record = await last_record(server, org)
    assert (record["status"], record["http_status"], record["charged_microcents"]) == ("error", 429, 0)


@pytest.mark.parametrize(("provider", "fault", "status", "code"), [
    ("anthropic", 529, 503, "UPSTREAM_OVERLOADED"),
    ("gemini", 503, 503, "UPSTREAM_OVERLOADED"),
    ("openai", 500, 502, "UPSTREAM_ERROR"),
    ("openai", 504, 504, "GATEWAY_TIMEOUT"),
    ("openai", 400, 400, "UPSTREAM_BAD_REQUEST"),
    ("openai", 413, 413, "PAYLOAD_TOO_LARGE"),
])
async def test_provider_failures_map_to_the_documented_status(server: Server, provider: str, fault: int,
                                                              status: int, code: str) -> None:
    org = await server.new_org()
    before = await balance(server, org)
    response = await post(server, org, MODELS[provider], f"hello [[sim:status={fault}]]")
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert provider in response.json()["error"]["message"]
    assert await balance(server, org) == before


async def test_a_provider_billing_error_on_a_byok_key_is_402_and_names_the_provider(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        assert (await api.post("/api/v1/billing/byok-keys",
                               json={"provider": "openai", "apiKey": "sk-test-billing-0123456789abcdef"})
                ).status_code == 201
    response = await post(server, org, "gpt-5.6-luna", "hello [[sim:status=402]]")
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert error["code"] == "PROVIDER_BILLING_ERROR" and "openai" in error["message"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_cut_stream_ends_with_an_error_and_charges_an_estimate(server: Server, provider: str) -> None:
    org = await server.new_org()
    before = await balance(server, org)
    response = await post(server, org, MODELS[provider], "one two three four five six [[sim:cut_after=4]]",
                          stream=True)
    assert response.status_code == 200
    frames = [f[6:] for f in response.text.split("\n\n") if f.startswith("data: ")]
    assert frames[-1] != "[DONE]"
    assert "stopped streaming" in orjson.loads(frames[-1])["error"]["message"]
    delivered = "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
                        for c in map(orjson.loads, frames[:-1]))
    record = await last_record(server, org)
    assert record["status"] == "upstream_cut" and record["usage_estimated"] is True
    # The estimate: a token per 4 UTF-8 bytes of what was delivered, rounded up (never below a report).
    assert record["output_tokens"] >= -(-len(delivered.encode()) // 4) > 0
    assert record["charged_microcents"] > 0
    assert await balance(server, org) == before - record["charged_microcents"]


async def test_a_stream_without_usage_is_estimated_and_completes(server: Server) -> None:
    org = await server.new_org()
    response = await post(server, org, "gpt-5.6-luna", "alpha beta gamma [[sim:no_usage]]", stream=True)
    assert response.text.rstrip().endswith("data: [DONE]")
    record = await last_record(server, org)
    assert record["status"] == "ok" and record["usage_estimated"] is True
    assert record["input_tokens"] > 0 and record["output_tokens"] > 0 and record["charged_microcents"] > 0


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "zhipu", "minimax"])
async def test_a_provider_error_mid_stream_reaches_the_client_and_bills_what_was_delivered(
        server: Server, provider: str) -> None:
    org = await server.new_org()
    before = await balance(server, org)
    response = await post(server, org, MODELS[provider],
                          "one two three four five six seven eight [[sim:stream_error_after=2]]", stream=True)
    assert response.status_code == 200
    frames = [orjson.loads(f[6:]) for f in response.text.split("\n\n")
              if f.startswith("data: ") and f != "data: [DONE]"]
    assert "data: [DONE]" not in response.text
    assert any("error" in f for f in frames)  # the provider's error, or ours once the stream ends unfinished
    delivered = "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in frames)
    assert delivered  # two events of text got through before the error
    record = await last_record(server, org)
    assert record["status"] == "upstream_cut" and record["usage_estimated"] is True
    # An error chunk's empty usage (MiniMax's base_resp carries zeros) is no report: input is estimated.
    assert record["input_tokens"] > 0
    assert record["output_tokens"] >= -(-len(delivered.encode()) // 4) > 0
    assert record["charged_microcents"] > 0
    assert await balance(server, org) == before - record["charged_microcents"]

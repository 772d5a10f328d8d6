"""The specification's "Verify it's working" check, through real HTTP and the official openai client.

Add a key, call a model of that provider: the BYOK request count goes up, the balance does not move,
and the upstream saw the org's key. Deactivate it, call again: the platform key pays and the balance
falls by exactly the list-price cost (plus the fee once deposits pass $100), computed here by hand.
"""

import hashlib
from decimal import ROUND_HALF_UP, Decimal

import openai
import pytest

from alumia.sim.server import SimServer

from harness import Org, Server, fake_key

# gpt-5.6-sol list prices, USD per million tokens (models.toml); 1 token at $1/MTok = 1 microcent.
SOL_INPUT, SOL_OUTPUT = Decimal(5), Decimal(30)
MESSAGES = [{"role": "user", "content": "Tell me something about microcents please"}]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def expected_charge(prompt_tokens: int, completion_tokens: int, fee: bool) -> int:
    cost = (prompt_tokens * SOL_INPUT + completion_tokens * SOL_OUTPUT).quantize(Decimal(1), ROUND_HALF_UP)
    fee_part = (cost * Decimal(550) / Decimal(10_000)).quantize(Decimal(1), ROUND_HALF_UP) if fee else 0
    return int(cost) + int(fee_part)


async def billing(server: Server, org: Org) -> dict:
    async with server.api(org.key) as api:
        response = await api.get("/api/v1/billing")
    assert response.status_code == 200
    return response.json()["data"]


def client(server: Server, org: Org) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key, max_retries=0)


async def call(server: Server, org: Org, *, stream: bool) -> tuple[str, int, int, str]:
    """One call with the official client: (route, prompt tokens, completion tokens, text)."""
    async with client(server, org) as oa:
        if not stream:
            raw = await oa.chat.completions.with_raw_response.create(model="gpt-5.6-sol", messages=MESSAGES)
            completion = raw.parse()
            usage = completion.usage
            assert usage is not None
            return (raw.headers["x-alumia-route"], usage.prompt_tokens, usage.completion_tokens,
                    completion.choices[0].message.content or "")
        raw = await oa.chat.completions.with_raw_response.create(
            model="gpt-5.6-sol", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
        text, usage = "", None
        async for chunk in raw.parse():
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
        assert usage is not None
        return raw.headers["x-alumia-route"], usage.prompt_tokens, usage.completion_tokens, text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("deposit_cents", [0, 10_001], ids=["fee-waived", "fee-applies"])
async def test_verify_its_working(server: Server, sim: SimServer, stream: bool, deposit_cents: int) -> None:
    org = await server.new_org(deposit_cents=deposit_cents)
    byok_key = fake_key("sk-proj-test-")
    async with server.api(org.key) as api:
        added = await api.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": byok_key})
    assert added.status_code == 201
    key_json = added.json()["data"]
    assert key_json["status"] == "active" and key_json["provider"] == "openai"
    assert key_json["maskedKey"] == byok_key[:7] + "…" + byok_key[-4:]
    assert byok_key not in added.text

    before = await billing(server, org)
    route, _, _, text = await call(server, org, stream=stream)
    after = await billing(server, org)
    assert route == "byok"
    assert text.startswith("Simulated reply from openai/gpt-5.6-sol")
    month_before, month_after = before["usage"]["currentMonth"], after["usage"]["currentMonth"]
    assert month_after["byokRequestCount"] == month_before["byokRequestCount"] + 1
    assert after["balance"]["balanceMicrocents"] == before["balance"]["balanceMicrocents"]
    assert month_after["spentMicrocents"] == month_before["spentMicrocents"]
    assert sim.calls()[-1]["keySha256"] == sha(byok_key)

    async with server.api(org.key) as api:
        gone = await api.delete(f"/api/v1/billing/byok-keys/{key_json['id']}")
    assert gone.status_code == 200
    assert gone.json()["data"]["status"] == "inactive"

    route, prompt_tokens, completion_tokens, _ = await call(server, org, stream=stream)
    final = await billing(server, org)
    assert route == "platform"
    assert sim.calls()[-1]["keySha256"] == sha(server.platform_key("openai"))
    charge = expected_charge(prompt_tokens, completion_tokens, fee=deposit_cents > 10_000)
    assert charge > 0
    assert final["balance"]["balanceMicrocents"] == after["balance"]["balanceMicrocents"] - charge
    assert final["usage"]["currentMonth"]["byokRequestCount"] == month_after["byokRequestCount"]
    assert final["usage"]["currentMonth"]["spentMicrocents"] == month_after["spentMicrocents"] + charge
    newest = final["recentTransactions"][0]
    assert newest["type"] == "usage_charge" and newest["amountMicrocents"] == -charge
    assert newest["balanceAfterMicrocents"] == final["balance"]["balanceMicrocents"]

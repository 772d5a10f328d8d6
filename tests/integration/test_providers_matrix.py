"""Every provider through the gateway with the official openai client: chat, stream, a tool call and a
rejected key, each with the exact tokens and microcents.

Expected numbers are worked out here, independently of the gateway: tokens by the simulator's
documented rule (4 + words per message; the reply is a fixed prefix plus the user's words; a tool
call's tokens are the whitespace-separated words of its JSON arguments), prices read straight from
models.toml, and money as round_half_up(cost) + round_half_up(cost x 550 / 10000) once deposits
pass $100.
"""

import hashlib
import json
import secrets
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

import openai
import pytest

from alumia.sim.server import SimServer

from harness import Org, Server

DATA = resources.files("alumia.domain.data")
PROVIDERS_TOML = tomllib.loads(DATA.joinpath("providers.toml").read_text())
MODELS_TOML = tomllib.loads(DATA.joinpath("models.toml").read_text())["model"]
FIRST_MODEL = {}
for entry in MODELS_TOML:
    FIRST_MODEL.setdefault(entry["provider"], entry)

USER_WORDS = "Tell me about the gateway"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": USER_WORDS}]
PROMPT_TOKENS = (4 + 2) + (4 + 5)
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city", "days"]}}}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def charge(entry: dict, prompt: int, completion: int) -> int:
    cost = (prompt * Decimal(entry["input"]) + completion * Decimal(entry["output"])).quantize(
        Decimal(1), ROUND_HALF_UP)
    fee = (cost * 550 / Decimal(10_000)).quantize(Decimal(1), ROUND_HALF_UP)
    return int(cost + fee)


async def balance(server: Server, org: Org) -> int:
    async with server.api(org.key) as api:
        return (await api.get("/api/v1/billing")).json()["data"]["balance"]["balanceMicrocents"]


@pytest.fixture(params=sorted(FIRST_MODEL), ids=sorted(FIRST_MODEL))
def provider(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_chat_stream_and_tool_call_with_exact_tokens_and_money(server: Server, sim: SimServer,
                                                                     provider: str) -> None:
    entry = FIRST_MODEL[provider]
    model = entry["id"]
    free = PROVIDERS_TOML[provider].get("free", False)
    org = await server.new_org(deposit_cents=10_001)  # past the waiver: the fee applies
    reply = f"Simulated reply from {provider}/{model}: {USER_WORDS}"
    reply_tokens = len(reply.split())
    async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key, max_retries=0) as client:
        before = await balance(server, org)
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        answer = raw.parse()
        assert raw.headers["x-alumia-route"] == ("free" if free else "platform")
        assert answer.choices[0].message.content == reply
        assert answer.choices[0].finish_reason == "stop"
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (PROMPT_TOKENS, reply_tokens)
        after_chat = await balance(server, org)
        assert before - after_chat == (0 if free else charge(entry, PROMPT_TOKENS, reply_tokens))
        assert sim.calls()[-1]["provider"] == provider

        stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                                      stream_options={"include_usage": True})
        text, finish, usage = "", None, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            usage = chunk.usage or usage
        assert (text, finish) == (reply, "stop")
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, reply_tokens)
        after_stream = await balance(server, org)
        assert after_chat - after_stream == (0 if free else charge(entry, PROMPT_TOKENS, reply_tokens))

        tool_answer = await client.chat.completions.create(model=model, messages=MESSAGES, tools=[TOOL],
                                                           tool_choice="required")
        choice = tool_answer.choices[0]
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert call.function.name == "get_weather"
        arguments = json.loads(call.function.arguments)
        assert arguments == {"city": "sim", "days": 1}
        tool_tokens = len(json.dumps(arguments).split())
        assert tool_answer.usage.completion_tokens == tool_tokens
        after_tool = await balance(server, org)
        assert after_stream - after_tool == (0 if free else charge(entry, PROMPT_TOKENS, tool_tokens))


async def test_a_revoked_byok_key_is_rejected_without_fallback(server: Server, sim: SimServer,
                                                               provider: str) -> None:
    model = FIRST_MODEL[provider]["id"]
    org = await server.new_org()
    key = f"test-{provider}-" + secrets.token_hex(16)
    async with server.api(org.key) as api:
        assert (await api.post("/api/v1/billing/byok-keys",
                               json={"provider": provider, "apiKey": key})).status_code == 201
    sim.revoke(key)
    before_calls = len(sim.calls())
    before = await balance(server, org)
    async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key, max_retries=0) as client:
        for stream in (False, True):
            with pytest.raises(openai.AuthenticationError) as info:
                await client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
            error = info.value.body
            assert error["code"] == "BYOK_KEY_REJECTED"
            assert error["message"].startswith(f"{provider} rejected your org's BYOK key")
            assert f"/{org.slug}/billing" in error["message"]
    assert [c["keySha256"] for c in sim.calls()[before_calls:]] == [sha(key)] * 2
    assert await balance(server, org) == before

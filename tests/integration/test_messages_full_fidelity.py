"""The Anthropic door at full fidelity, with the official anthropic client over real HTTP, on both
databases: cache_control reaches Claude and its cache reads and writes are charged at their own prices,
thinking comes back signed (streamed and not) and goes back intact, thinking reaches Gemini as a
thinking budget and OpenAI as a reasoning effort and is refused where there is no control, and
count_tokens counts for free.

Expected numbers are worked out here from the simulator's documented rules (alumia.sim.anthropic_format,
gemini_format, thinking) and the catalog's prices, never from the gateway: tokens are 4 + words per
message, a reply is its prefix plus the user's words, thinking is "Simulated thinking by
{provider}/{model}:" plus the user's words; a request with cache_control reads P // 2 of its P prompt
tokens from the cache and writes P // 4; money is round_half_up(cost) + round_half_up(cost x 5.5%).
"""

import hashlib
import secrets
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

import anthropic
import pytest
from sqlalchemy import select

from alumia.sim.server import SimServer
from alumia.storage.tables import holds, usage_records

from harness import Org, Server

MODELS = {entry["id"]: entry for entry in tomllib.loads(
    resources.files("alumia.domain.data").joinpath("models.toml").read_text())["model"]}
CLAUDE = "claude-haiku-4-5"
GEMINI = "gemini-3.7-flash"
EPHEMERAL = {"type": "ephemeral"}
SYSTEM = "You are terse and exact."  # 5 words
USER = "Summarise the cached context please"  # 5 words
WEATHER = {"name": "weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
PROMPT = (4 + 5) + (4 + 5)


def client(server: Server, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.base_url, api_key=key, max_retries=0)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def words(text: str) -> int:
    return len(text.split())


def charge(model: str, *, input_tokens: int, output_tokens: int, cache_read: int = 0,
           cache_write: int = 0) -> int:
    entry = MODELS[model]

    def price(name: str) -> Decimal:
        return Decimal(entry.get(name, entry["input"]))

    cost = (input_tokens * price("input") + output_tokens * Decimal(entry["output"])
            + cache_read * price("cached_input") + cache_write * price("cache_write"))
    cost = cost.quantize(Decimal(1), ROUND_HALF_UP)
    return int(cost + (cost * 550 / Decimal(10_000)).quantize(Decimal(1), ROUND_HALF_UP))


async def balance(server: Server, org: Org) -> int:
    async with server.api(org.key) as api:
        return (await api.get("/api/v1/billing")).json()["data"]["balance"]["balanceMicrocents"]


async def records(server: Server, org: Org) -> list[dict]:
    async with server.db.read() as conn:
        rows = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).all()
    return [dict(row._mapping) for row in rows]


def reply_text(provider: str, model: str, user: str) -> str:
    return f"Simulated reply from {provider}/{model}: {user}"


def thinking_text(provider: str, model: str, user: str) -> str:
    return f"Simulated thinking by {provider}/{model}: {user}"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_cache_control_reaches_claude_and_cache_tokens_are_charged_at_their_prices(
        server: Server, sim: SimServer, stream: bool) -> None:
    org = await server.new_org(deposit_cents=10_001)  # past the waiver: the fee applies
    ask = {"model": CLAUDE, "max_tokens": 200, "tools": [{**WEATHER, "cache_control": EPHEMERAL}],
           "system": [{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}],
           "messages": [{"role": "user", "content": [{"type": "text", "text": USER,
                                                      "cache_control": EPHEMERAL}]}]}
    before, paid = len(sim.calls()), await balance(server, org)
    async with client(server, org.key) as claude:
        if stream:
            async with claude.messages.stream(**ask) as events:
                message = await events.get_final_message()
        else:
            message = await claude.messages.create(**ask)
    [call] = sim.calls()[before:]
    assert call["received"]["cache_control"] == {"system.0": EPHEMERAL, "messages.0.content.0": EPHEMERAL,
                                                 "tools.0": EPHEMERAL}
    read, written = PROMPT // 2, PROMPT // 4
    output = words(reply_text("anthropic", CLAUDE, USER))
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens,
            usage.output_tokens) == (PROMPT - read - written, read, written, output)
    [record] = await records(server, org)
    assert (record["input_tokens"], record["cache_read_tokens"], record["cache_write_tokens"],
            record["output_tokens"]) == (PROMPT - read - written, read, written, output)
    expected = charge(CLAUDE, input_tokens=PROMPT - read - written, output_tokens=output, cache_read=read,
                      cache_write=written)
    assert record["charged_microcents"] == expected
    assert paid - await balance(server, org) == expected


async def test_cache_control_is_dropped_for_other_providers_without_an_error(server: Server) -> None:
    org = await server.new_org()
    async with client(server, org.key) as claude:
        message = await claude.messages.create(model="gpt-5.6-luna", max_tokens=200, messages=[
            {"role": "user", "content": [{"type": "text", "text": USER, "cache_control": EPHEMERAL}]}])
    assert message.content[0].text == reply_text("openai", "gpt-5.6-luna", USER)  # type: ignore[union-attr]
    assert message.usage.cache_read_input_tokens == 0


THINK = {"type": "enabled", "budget_tokens": 1024}
QUESTION = "Why is the sky blue"


async def test_thinking_comes_back_signed_and_goes_back_to_claude_intact(server: Server,
                                                                         sim: SimServer) -> None:
    org = await server.new_org(deposit_cents=10_001)
    ask = {"model": CLAUDE, "max_tokens": 2048, "thinking": THINK,
           "messages": [{"role": "user", "content": QUESTION}]}
    before, paid = len(sim.calls()), await balance(server, org)
    async with client(server, org.key) as claude:
        message = await claude.messages.create(**ask)
        thought = thinking_text("anthropic", CLAUDE, QUESTION)
        assert [block.type for block in message.content] == ["thinking", "text"]
        thinking = message.content[0]
        assert thinking.thinking == thought  # type: ignore[union-attr]
        assert thinking.signature == "sim-sig-" + sha(thought)  # type: ignore[union-attr]
        output = words(reply_text("anthropic", CLAUDE, QUESTION)) + words(thought)
        assert message.usage.output_tokens == output  # thinking is output
        assert paid - await balance(server, org) == charge(CLAUDE, input_tokens=4 + 5, output_tokens=output)
        assert sim.calls()[before]["received"]["thinking"] == THINK

        follow_up = [*ask["messages"],  # type: ignore[misc]
                     {"role": "assistant", "content": [block.model_dump() for block in message.content]},
                     {"role": "user", "content": "And at sunset"}]
        again = await claude.messages.create(**{**ask, "messages": follow_up})
        assert again.content[-1].text == reply_text("anthropic", CLAUDE, "And at sunset")  # type: ignore[union-attr]
        assert sim.calls()[-1]["received"]["thinking_blocks"] == 1  # its signature checked upstream

        tampered = [*follow_up]
        edited = {**message.content[0].model_dump(), "thinking": "edited"}
        tampered[1] = {"role": "assistant", "content": [edited, message.content[1].model_dump()]}
        with pytest.raises(anthropic.BadRequestError) as refused:
            await claude.messages.create(**{**ask, "messages": tampered})
    assert "signature" in refused.value.body["error"]["message"]  # type: ignore[index]


async def test_thinking_streams_as_thinking_and_signature_deltas(server: Server) -> None:
    org = await server.new_org()
    ask = {"model": CLAUDE, "max_tokens": 2048, "thinking": THINK,
           "messages": [{"role": "user", "content": QUESTION}]}
    thought = thinking_text("anthropic", CLAUDE, QUESTION)
    async with client(server, org.key) as claude, claude.messages.stream(**ask) as events:
        deltas = [event.delta.type async for event in events if event.type == "content_block_delta"]
        message = await events.get_final_message()
    assert deltas.count("thinking_delta") == words(thought) and deltas.count("signature_delta") == 1
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == thought  # type: ignore[union-attr]
    assert message.content[0].signature == "sim-sig-" + sha(thought)  # type: ignore[union-attr]
    assert message.usage.output_tokens == words(reply_text("anthropic", CLAUDE, QUESTION)) + words(thought)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_thinking_reaches_gemini_as_a_thinking_budget_and_its_thoughts_come_back(
        server: Server, sim: SimServer, stream: bool) -> None:
    org = await server.new_org()
    ask = {"model": GEMINI, "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1500},
           "messages": [{"role": "user", "content": QUESTION}]}
    before = len(sim.calls())
    async with client(server, org.key) as claude:
        if stream:
            async with claude.messages.stream(**ask) as events:
                message = await events.get_final_message()
        else:
            message = await claude.messages.create(**ask)
    [call] = sim.calls()[before:]
    assert call["received"]["thinkingConfig"] == {"thinkingBudget": 1500, "includeThoughts": True}
    thought = thinking_text("gemini", GEMINI, QUESTION)
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == thought  # type: ignore[union-attr]
    assert message.usage.output_tokens == words(reply_text("gemini", GEMINI, QUESTION)) + words(thought)


async def test_thinking_reaches_openai_as_a_reasoning_effort(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    async with client(server, org.key) as claude:
        await claude.messages.create(model="gpt-5.6-luna", max_tokens=20_000,
                                     thinking={"type": "enabled", "budget_tokens": 10_000},
                                     messages=[{"role": "user", "content": QUESTION}])
    assert sim.calls()[-1]["received"]["reasoning_effort"] == "medium"


async def test_thinking_on_a_provider_without_a_reasoning_control_is_a_400_naming_it(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    async with client(server, org.key) as claude:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await claude.messages.create(model="mistral-large-2512", max_tokens=2048, thinking=THINK,
                                         messages=[{"role": "user", "content": QUESTION}])
    error = refused.value.body["error"]  # type: ignore[index]
    assert refused.value.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["code"] == "BAD_REQUEST"
    assert error["message"].startswith("thinking: mistral has no reasoning control")
    assert len(sim.calls()) == before


COUNTED = {"system": SYSTEM, "messages": [{"role": "user", "content": USER}]}


async def test_count_tokens_for_claude_is_anthropics_count_and_free(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    paid = await balance(server, org)
    before = len(sim.calls())
    async with client(server, org.key) as claude:
        raw = await claude.messages.with_raw_response.count_tokens(model=CLAUDE, **COUNTED)
    assert (await raw.parse()).input_tokens == PROMPT
    assert raw.headers["x-alumia-token-count"] == "provider" and raw.headers["x-alumia-route"] == "platform"
    [call] = sim.calls()[before:]
    assert call["path"] == "/anthropic/v1/messages/count_tokens"
    assert call["keySha256"] == sha(server.platform_key("anthropic"))
    assert await balance(server, org) == paid and await records(server, org) == []


async def test_count_tokens_for_claude_asks_with_the_orgs_byok_key(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    key = "test-anthropic-" + secrets.token_hex(16)
    async with server.api(org.key) as api:
        assert (await api.post("/api/v1/billing/byok-keys",
                               json={"provider": "anthropic", "apiKey": key})).status_code == 201
    async with client(server, org.key) as claude:
        raw = await claude.messages.with_raw_response.count_tokens(model=CLAUDE, **COUNTED)
    assert (await raw.parse()).input_tokens == PROMPT and raw.headers["x-alumia-route"] == "byok"
    assert sim.calls()[-1]["keySha256"] == sha(key)


async def test_count_tokens_for_another_provider_is_a_labelled_estimate(server: Server,
                                                                        sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    async with client(server, org.key) as claude:
        raw = await claude.messages.with_raw_response.count_tokens(model="gpt-5.6-luna", **COUNTED)
    # domain/estimate.py: 4 per message plus ceil(UTF-8 bytes / 4) of its text.
    assert (await raw.parse()).input_tokens == (4 + -(-len(SYSTEM) // 4)) + (4 + -(-len(USER) // 4))
    assert raw.headers["x-alumia-token-count"] == "estimate"
    assert len(sim.calls()) == before and await records(server, org) == []


async def test_count_tokens_checks_its_input_and_its_caller(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    async with server.api(None) as api:
        bad = await api.post("/v1/messages/count_tokens", json={"model": CLAUDE, "messages": []},
                             headers={"x-api-key": org.key})
        stranger = await api.post("/v1/messages/count_tokens", json={"model": CLAUDE, **COUNTED},
                                  headers={"x-api-key": "alm_test_" + "f" * 48})
    assert bad.status_code == 422 and bad.json()["error"]["message"].startswith("messages: ")
    assert stranger.status_code == 401 and stranger.json()["error"]["type"] == "authentication_error"
    assert len(sim.calls()) == before


OVERRUN = "one two three four five six [[sim:overrun=400]]"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_claude_sent_natively_still_stops_at_its_hold(server: Server, stream: bool) -> None:
    """A provider that ignores max_tokens (the simulator's overrun) is cut at the hold on the native
    path too: the client gets a well-formed message ending in max_tokens, billed within the hold."""
    org = await server.new_org(deposit_cents=5_000)
    ask = {"model": CLAUDE, "max_tokens": 8, "messages": [{"role": "user", "content": OVERRUN}]}
    async with client(server, org.key) as claude:
        if stream:
            async with claude.messages.stream(**ask) as events:
                message = await events.get_final_message()
        else:
            message = await claude.messages.create(**ask)
    assert message.stop_reason == "max_tokens"
    text = message.content[0].text  # type: ignore[union-attr]
    assert 8 < len(text.split()) < 400 and "more400" not in text
    [record] = await records(server, org)
    async with server.db.read() as conn:
        hold = (await conn.execute(select(holds).where(holds.c.id == record["id"]))).one()
    assert record["status"] == "reservation_reached"
    assert record["usage_estimated"] is True
    assert 0 < record["charged_microcents"] <= hold.amount_microcents
    assert (hold.status, hold.charged_microcents) == ("settled", record["charged_microcents"])

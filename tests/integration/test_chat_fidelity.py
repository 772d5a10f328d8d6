"""The OpenAI door at full fidelity on every wire format, with the official openai client unchanged, over
real HTTP on both databases: structured output parsed into a Pydantic model from Claude and Gemini
(streamed too), n on Gemini as candidates each billed, reasoning_effort as Claude's thinking, and stop,
seed, logprobs and parallel_tool_calls each either seen by the upstream (the simulator's record) or
refused with a 400 naming the field, with nothing sent.

Expected numbers come from the simulator's documented rules (alumia.sim.openai_format, gemini_format,
tool_args), never from the gateway: a JSON answer is the minimal instance of its schema, ``{"city":
"sim", "days": 1}`` for the model below, whose tokens are its words; a reply is its prefix plus the
user's words (candidate 2 says ``#2``); money is round_half_up(cost) + round_half_up(cost x 5.5%).
"""

import json
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from typing import Any

import openai
import orjson
import pytest
from pydantic import BaseModel

from alumia.sim.server import SimServer

from harness import Org, Server

MODELS = {entry["id"]: entry for entry in tomllib.loads(
    resources.files("alumia.domain.data").joinpath("models.toml").read_text())["model"]}
CLAUDE = "claude-haiku-4-5"
GEMINI = "gemini-3.7-flash"
USER = "Weather for Paris please"  # 4 words
MESSAGES = [{"role": "user", "content": USER}]
PROMPT = 4 + 4
WEATHER_JSON = '{"city": "sim", "days": 1}'
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}


class Weather(BaseModel):
    city: str
    days: int


def charge(model: str, prompt: int, completion: int) -> int:
    entry = MODELS[model]
    cost = (prompt * Decimal(entry["input"]) + completion * Decimal(entry["output"])).quantize(
        Decimal(1), ROUND_HALF_UP)
    return int(cost + (cost * 550 / Decimal(10_000)).quantize(Decimal(1), ROUND_HALF_UP))


async def balance(server: Server, org: Org) -> int:
    async with server.api(org.key) as api:
        return (await api.get("/api/v1/billing")).json()["data"]["balance"]["balanceMicrocents"]


def client(server: Server, org: Org) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key, max_retries=0)


async def post(server: Server, org: Org, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with server.api(org.key) as api:
        response = await api.post("/v1/chat/completions", content=orjson.dumps(body),
                                  headers={"Content-Type": "application/json"}, timeout=60)
    return response.status_code, response.json()


def last_received(sim: SimServer) -> dict[str, Any]:
    received: dict[str, Any] = sim.calls()[-1]["received"]
    return received


@pytest.mark.parametrize("model", [CLAUDE, GEMINI])
async def test_the_openai_client_parses_a_pydantic_model_from_claude_and_gemini(
        server: Server, sim: SimServer, model: str) -> None:
    org = await server.new_org(deposit_cents=10_001)
    before = await balance(server, org)
    async with client(server, org) as openai_client:
        answer = await openai_client.chat.completions.parse(model=model, messages=MESSAGES,
                                                            response_format=Weather)
    choice = answer.choices[0]
    assert choice.message.parsed == Weather(city="sim", days=1)
    assert choice.message.content == WEATHER_JSON
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    received = last_received(sim)
    if model == CLAUDE:
        schema = received["output_config"]["format"]
        assert schema["type"] == "json_schema"
        assert schema["schema"]["required"] == ["city", "days"]
    else:
        assert received["responseMimeType"] == "application/json"
        assert received["responseJsonSchema"]["properties"]["days"] == {"title": "Days", "type": "integer"}
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (PROMPT, 4)
    assert before - await balance(server, org) == charge(model, PROMPT, 4)


async def test_a_json_schema_streams_from_claude_as_content(server: Server, sim: SimServer) -> None:
    org = await server.new_org(deposit_cents=1_000)
    async with client(server, org) as openai_client, openai_client.chat.completions.stream(
            model=CLAUDE, messages=MESSAGES, response_format=Weather) as stream:
        async for _event in stream:
            pass
        final = await stream.get_final_completion()
    assert final.choices[0].message.parsed == Weather(city="sim", days=1)
    assert final.choices[0].finish_reason == "stop"
    assert last_received(sim)["output_config"]["format"]["type"] == "json_schema"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_json_object_on_claude_is_the_gateways_tool_call_shown_as_content(
        server: Server, sim: SimServer, stream: bool) -> None:
    org = await server.new_org(deposit_cents=1_000)
    async with client(server, org) as openai_client:
        if stream:
            text, finish, calls = "", None, []
            async for chunk in await openai_client.chat.completions.create(
                    model=CLAUDE, messages=MESSAGES, response_format={"type": "json_object"}, stream=True):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    calls += chunk.choices[0].delta.tool_calls or []
                    finish = chunk.choices[0].finish_reason or finish
        else:
            answer = await openai_client.chat.completions.create(model=CLAUDE, messages=MESSAGES,
                                                                 response_format={"type": "json_object"})
            text, finish = answer.choices[0].message.content or "", answer.choices[0].finish_reason
            calls = answer.choices[0].message.tool_calls or []
    assert (json.loads(text), finish, calls) == ({}, "stop", [])
    received = last_received(sim)
    assert received["tool_choice"] == {"type": "tool", "name": "json_answer",
                                       "disable_parallel_tool_use": True}
    assert [tool["name"] for tool in received["tools"]] == ["json_answer"]


async def test_n_on_gemini_is_candidates_each_billed(server: Server, sim: SimServer) -> None:
    org = await server.new_org(deposit_cents=10_001)
    reply = f"Simulated reply from gemini/{GEMINI}: {USER}"
    second = f"Simulated reply from gemini/{GEMINI}#2: {USER}"
    words = len(reply.split())
    before = await balance(server, org)
    async with client(server, org) as openai_client:
        answer = await openai_client.chat.completions.create(model=GEMINI, messages=MESSAGES, n=2)
        assert [c.message.content for c in answer.choices] == [reply, second]
        assert [c.index for c in answer.choices] == [0, 1]
        assert sim.calls()[-1]["received"]["candidateCount"] == 2
        assert answer.usage is not None and answer.usage.completion_tokens == 2 * words
        after = await balance(server, org)
        assert before - after == charge(GEMINI, PROMPT, 2 * words)

        texts: dict[int, str] = {}
        finishes: dict[int, str] = {}
        async for chunk in await openai_client.chat.completions.create(
                model=GEMINI, messages=MESSAGES, n=2, stream=True, stream_options={"include_usage": True}):
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert texts == {0: reply, 1: second} and finishes == {0: "stop", 1: "stop"}
        assert after - await balance(server, org) == charge(GEMINI, PROMPT, 2 * words)


async def test_n_on_claude_is_refused_naming_n_and_nothing_is_sent(server: Server, sim: SimServer) -> None:
    org = await server.new_org(deposit_cents=1_000)
    sent = len(sim.calls())
    async with client(server, org) as openai_client:
        with pytest.raises(openai.BadRequestError) as info:
            await openai_client.chat.completions.create(model=CLAUDE, messages=MESSAGES, n=2)
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "BAD_REQUEST"
    assert info.value.body["message"].startswith("n: anthropic does not support n > 1")
    assert len(sim.calls()) == sent


@pytest.mark.parametrize(("effort", "limit", "budget"), [("low", 4000, 1024), ("medium", 4000, 3999),
                                                          ("high", 30000, 24576)])
async def test_reasoning_effort_reaches_claude_as_a_thinking_budget(
        server: Server, sim: SimServer, effort: str, limit: int, budget: int) -> None:
    org = await server.new_org(deposit_cents=1_000)
    status, answer = await post(server, org, {"model": CLAUDE, "messages": MESSAGES,
                                              "reasoning_effort": effort, "max_completion_tokens": limit})
    assert status == 200, answer
    received = last_received(sim)
    assert received["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert received["max_tokens"] == limit
    thought = answer["choices"][0]["message"]["reasoning_content"]
    assert thought.startswith(f"Simulated thinking by anthropic/{CLAUDE}:")


OBJECT_SCHEMA = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
# (model, request fields, what the simulator must have received), each sent as the client wrote it
# or as the provider's own field.
PASSED = [
    ("claude-stop", CLAUDE, {"stop": ["END", "STOP"]}, {"stop_sequences": ["END", "STOP"]}),
    ("claude-parallel", CLAUDE, {"tools": [TOOL], "parallel_tool_calls": False},
     {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ("claude-effort-none", CLAUDE, {"reasoning_effort": "none"}, {"thinking": {"type": "disabled"}}),
    ("gemini-stop-seed", GEMINI, {"stop": "END", "seed": 7}, {"stopSequences": ["END"], "seed": 7}),
    ("gemini-logprobs", GEMINI, {"logprobs": True, "top_logprobs": 2},
     {"responseLogprobs": True, "logprobs": 2}),
    ("gemini-effort", GEMINI, {"reasoning_effort": "low"}, {"thinkingConfig": {"thinkingBudget": 1024}}),
    ("openai-all", "gpt-5.6-luna", {"stop": ["END"], "seed": 7, "logprobs": True, "top_logprobs": 2,
                                    "tools": [TOOL], "parallel_tool_calls": False, "reasoning_effort": "low",
                                    "response_format": {"type": "json_object"}},
     {"stop": ["END"], "seed": 7, "logprobs": True, "top_logprobs": 2, "parallel_tool_calls": False,
      "reasoning_effort": "low", "response_format": {"type": "json_object"}}),
    ("groq-schema", "llama-3.3-70b-versatile", {"response_format": OBJECT_SCHEMA},
     {"response_format": OBJECT_SCHEMA}),
]


@pytest.mark.parametrize(("model", "fields", "received"), [p[1:] for p in PASSED], ids=[p[0] for p in PASSED])
async def test_each_feature_reaches_the_provider_that_takes_it(server: Server, sim: SimServer, model: str,
                                                               fields: dict[str, Any],
                                                               received: dict[str, Any]) -> None:
    org = await server.new_org(deposit_cents=1_000)
    status, answer = await post(server, org, {"model": model, "messages": MESSAGES, **fields})
    assert status == 200, answer
    seen = last_received(sim)
    assert {name: seen.get(name) for name in received} == received


async def test_gemini_logprobs_come_back_in_openais_shape(server: Server, sim: SimServer) -> None:
    org = await server.new_org(deposit_cents=1_000)
    async with client(server, org) as openai_client:
        answer = await openai_client.chat.completions.create(model=GEMINI, messages=MESSAGES, logprobs=True,
                                                             top_logprobs=2)
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    first = choice.logprobs.content[0]
    assert (first.logprob, [t.token for t in first.top_logprobs]) == (-0.25, [first.token, "alt1"])
    assert first.bytes == list(first.token.encode())


# (model, request fields, the field the 400 names): the provider has no such feature, or not so.
REFUSED = [
    ("claude-seed", CLAUDE, {"seed": 7}, "seed"),
    ("claude-logprobs", CLAUDE, {"logprobs": True}, "logprobs"),
    ("claude-top-logprobs", CLAUDE, {"top_logprobs": 2}, "top_logprobs"),
    ("claude-effort-unknown", CLAUDE, {"reasoning_effort": "extreme"}, "reasoning_effort"),
    ("claude-effort-tiny-limit", CLAUDE, {"reasoning_effort": "low", "max_completion_tokens": 500},
     "reasoning_effort"),
    ("claude-json-object-with-tools", CLAUDE, {"response_format": {"type": "json_object"}, "tools": [TOOL]},
     "response_format"),
    ("gemini-parallel", GEMINI, {"tools": [TOOL], "parallel_tool_calls": False}, "parallel_tool_calls"),
    ("gemini-schema-pattern", GEMINI, {"response_format": {"type": "json_schema", "json_schema": {
        "name": "w",
        "schema": {"type": "object", "properties": {"code": {"type": "string", "pattern": "^A"}}}}}},
     "response_format.json_schema.schema.properties.code.pattern"),
    ("gemini-effort-unknown", GEMINI, {"reasoning_effort": "xhigh"}, "reasoning_effort"),
    ("groq-logprobs", "llama-3.3-70b-versatile", {"logprobs": True}, "logprobs"),
    ("mistral-seed", "mistral-large-2512", {"seed": 7}, "seed"),
    ("mistral-effort", "mistral-large-2512", {"reasoning_effort": "low"}, "reasoning_effort"),
    ("minimax-json", "MiniMax-M3", {"response_format": {"type": "json_object"}}, "response_format"),
    ("deepseek-schema", "deepseek-v4-flash", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "w", "schema": {"type": "object"}}}}, "response_format"),
]


@pytest.mark.parametrize(("model", "fields", "field"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_a_feature_the_provider_lacks_is_refused_naming_it(server: Server, sim: SimServer, model: str,
                                                                 fields: dict[str, Any], field: str) -> None:
    org = await server.new_org(deposit_cents=1_000)
    sent = len(sim.calls())
    before = await balance(server, org)
    status, answer = await post(server, org, {"model": model, "messages": MESSAGES, **fields})
    assert status == 400, answer
    assert answer["error"]["code"] == "BAD_REQUEST"
    assert answer["error"]["message"].startswith(f"{field}: ")
    assert len(sim.calls()) == sent
    assert await balance(server, org) == before

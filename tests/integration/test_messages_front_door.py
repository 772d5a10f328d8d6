"""POST /v1/messages with the official anthropic client: any catalog model, same routing and billing."""

import anthropic
import pytest

from alumia.sim.app import WIRE_FORMATS
from alumia.sim.server import SimServer

from harness import Org, Server

HELLO = [{"role": "user", "content": "hello front door"}]
WEATHER = {"name": "weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


def client(server: Server, key: str, **options: object) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.base_url, api_key=key, max_retries=0, **options)


async def month(server: Server, org: Org) -> dict:
    async with server.api(org.key) as api:
        return (await api.get("/api/v1/billing")).json()["data"]["usage"]["currentMonth"]


async def assert_billed_as_reported(server: Server, org: Org, usage: anthropic.types.Usage) -> None:
    recorded = await month(server, org)
    assert recorded["requestCount"] == 1
    assert (usage.input_tokens, usage.output_tokens) == (recorded["inputTokens"], recorded["outputTokens"])
    assert usage.output_tokens > 0 and usage.input_tokens > 0


def needs_sim_format(wire_format: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(wire_format not in WIRE_FORMATS,
                              reason=f"the simulator does not speak the {wire_format} wire format yet")


MODELS = [
    pytest.param("gpt-5.6-luna", "openai", id="openai-format"),
    pytest.param("claude-haiku-4-5", "anthropic", id="anthropic-format", marks=needs_sim_format("anthropic")),
    pytest.param("gemini-3.7-flash", "gemini", id="gemini-format", marks=needs_sim_format("gemini")),
]


@pytest.mark.parametrize(("model", "provider"), MODELS)
async def test_a_call_answers_as_anthropic_and_is_billed_as_reported(
        server: Server, model: str, provider: str) -> None:
    org = await server.new_org()
    async with client(server, org.key) as claude:
        raw = await claude.messages.with_raw_response.create(model=model, max_tokens=200, messages=HELLO)
    assert raw.headers["x-alumia-route"] == "platform"
    assert raw.headers["x-alumia-request-id"].startswith("req_")
    message = await raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith(f"Simulated reply from {provider}/{model}")
    assert message.stop_reason == "end_turn"
    await assert_billed_as_reported(server, org, message.usage)


@pytest.mark.parametrize(("model", "provider"), MODELS)
async def test_a_stream_builds_the_final_message_with_the_billed_usage(
        server: Server, model: str, provider: str) -> None:
    org = await server.new_org()
    async with client(server, org.key) as claude, \
            claude.messages.stream(model=model, max_tokens=200, messages=HELLO) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        message = await stream.get_final_message()
        assert stream.response.headers["x-alumia-route"] == "platform"
        assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert text.startswith(f"Simulated reply from {provider}/{model}")
    assert message.content[0].text == text  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    await assert_billed_as_reported(server, org, message.usage)


async def test_a_cut_answer_stops_at_max_tokens(server: Server) -> None:
    org = await server.new_org()
    async with client(server, org.key) as claude:
        message = await claude.messages.create(model="gpt-5.6-luna", max_tokens=2, messages=HELLO)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_tool_call_and_its_result_round_trip(server: Server, stream: bool) -> None:
    org = await server.new_org()
    ask = {"model": "gpt-5.6-luna", "max_tokens": 200, "tools": [WEATHER],
           "messages": [{"role": "user", "content": "weather in Paris?"}]}
    async with client(server, org.key) as claude:
        if stream:
            async with claude.messages.stream(**ask, tool_choice={"type": "any"}) as events:
                called = await events.get_final_message()
        else:
            called = await claude.messages.create(**ask, tool_choice={"type": "any"})
        assert called.stop_reason == "tool_use"
        tool_use = called.content[-1]
        assert tool_use.type == "tool_use" and tool_use.name == "weather"
        assert tool_use.input == {"city": "sim"}  # the simulator fills arguments from the schema
        answered = await claude.messages.create(**{**ask, "messages": [
            *ask["messages"],
            {"role": "assistant", "content": [block.model_dump() for block in called.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                          "content": "sunny"}]}]})
    assert answered.stop_reason == "end_turn" and answered.content[0].type == "text"


async def test_the_key_is_also_accepted_as_a_bearer_token(server: Server) -> None:
    org = await server.new_org()
    async with anthropic.AsyncAnthropic(base_url=server.base_url, auth_token=org.key,
                                        max_retries=0) as claude:
        message = await claude.messages.create(model="gpt-5.6-luna", max_tokens=50, messages=HELLO)
    assert message.content[0].type == "text"


async def test_a_bad_key_is_an_authentication_error(server: Server, sim: SimServer) -> None:
    before = len(sim.calls())
    async with client(server, "alm_test_" + "0" * 48) as claude:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await claude.messages.create(model="gpt-5.6-luna", max_tokens=50, messages=HELLO)
    assert raised.value.status_code == 401
    assert raised.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert len(sim.calls()) == before


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_platform_call_the_balance_cannot_cover_is_a_402_billing_error(
        server: Server, sim: SimServer, stream: bool) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    # The $10 early-bird credit cannot cover 1,000,000 output tokens of gpt-5.6-sol.
    ask = {"model": "gpt-5.6-sol", "max_tokens": 1_000_000, "messages": HELLO}
    async with client(server, org.key) as claude:
        with pytest.raises(anthropic.APIStatusError) as raised:
            if stream:
                async with claude.messages.stream(**ask) as events:
                    await events.get_final_message()
            else:
                # An explicit timeout: the SDK refuses a non-streamed call this large without one.
                await claude.messages.create(**ask, timeout=30)
    error = raised.value
    assert error.status_code == 402
    assert error.body["type"] == "error"  # type: ignore[index]
    assert error.body["error"]["type"] == "billing_error"  # type: ignore[index]
    assert error.body["error"]["code"] == "PAYMENT_REQUIRED"  # type: ignore[index]
    assert "insufficient" in error.body["error"]["message"]  # type: ignore[index]
    assert error.response.headers["x-alumia-route"] == "platform"
    assert error.response.headers["x-alumia-request-id"].startswith("req_")
    assert len(sim.calls()) == before
    assert (await month(server, org))["requestCount"] == 0


async def test_a_request_without_max_tokens_is_refused_and_a_stranger_gets_401_first(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    body = {"model": "gpt-5.6-luna", "messages": HELLO}
    async with server.api(None) as api:
        refused = await api.post("/v1/messages", json=body, headers={"x-api-key": org.key})
        stranger = await api.post("/v1/messages", json=body, headers={"x-api-key": "alm_test_" + "f" * 48})
    assert refused.status_code == 422
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in refused.json()["error"]["message"]
    assert stranger.status_code == 401
    assert stranger.json()["error"]["type"] == "authentication_error"
    assert len(sim.calls()) == before


@pytest.mark.parametrize(("status", "error_class", "kind"), [
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (503, anthropic.InternalServerError, "overloaded_error"),
])
async def test_a_provider_error_arrives_as_the_anthropic_error_for_its_status(
        server: Server, status: int, error_class: type[anthropic.APIStatusError], kind: str) -> None:
    org = await server.new_org()
    messages = [{"role": "user", "content": f"hello [[sim:status={status}]]"}]
    async with client(server, org.key) as claude:
        with pytest.raises(error_class) as raised:
            await claude.messages.create(model="gpt-5.6-luna", max_tokens=50, messages=messages)
    assert raised.value.status_code == status
    assert raised.value.body["error"]["type"] == kind  # type: ignore[index]
    assert raised.value.response.headers["x-alumia-route"] == "platform"


async def test_a_stream_the_provider_cuts_ends_in_an_error_event_and_is_still_metered(server: Server) -> None:
    org = await server.new_org()
    messages = [{"role": "user", "content": "hello [[sim:cut_after=3]]"}]
    async with client(server, org.key) as claude:
        with pytest.raises(anthropic.APIStatusError, match="stopped streaming"):
            async with claude.messages.stream(model="gpt-5.6-luna", max_tokens=50, messages=messages) as s:
                await s.get_final_message()
    assert (await month(server, org))["requestCount"] == 1


async def test_a_feature_the_provider_lacks_is_refused_by_the_name_the_client_sent(server: Server,
                                                                                   sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client(server, org.key).messages.create(
            model="gemini-3.7-flash", max_tokens=20, messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("tool_choice.disable_parallel_tool_use: gemini ")
    assert len(sim.calls()) == before  # nothing went upstream

"""POST /v1/responses with the official openai client: every wire format by translation to the chat call
path, the same routing, holds and billing, and the stored conversation state (GET, input_items, DELETE,
previous_response_id), scoped to the org."""

import hashlib
import secrets
import tomllib
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from typing import Any

import openai
import orjson
import pytest
from sqlalchemy import select, update

from alumia.clock import utcnow
from alumia.services.sweeper import sweep
from alumia.sim.server import SimServer
from alumia.storage.call_writes import Reserve
from alumia.storage.tables import ledger_entries, stored_responses, usage_records

import conformance
from harness import Org, Server, data, fake_key

MODELS = [
    pytest.param("gpt-5.6-luna", "openai", id="openai-format"),
    pytest.param("claude-haiku-4-5", "anthropic", id="anthropic-format"),
    pytest.param("gemini-3.7-flash", "gemini", id="gemini-format"),
]
PRICES = {m["id"]: m for m in tomllib.loads(
    resources.files("alumia.domain.data").joinpath("models.toml").read_text())["model"]}
WEATHER = {"type": "function", "name": "weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


def client(server: Server, key: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0,
                              default_headers=headers or None)


def words(text: str) -> int:
    return len(text.split())


async def records(server: Server, org: Org) -> list[dict[str, Any]]:
    async with server.db.read() as conn:
        rows = await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id)
                                  .order_by(usage_records.c.created_at))
        return [dict(r._mapping) for r in rows]


async def raw_events(server: Server, key: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a streamed request as the gateway sent them, checked against OpenAI's schema, their
    sequence numbers counting up from 0 and each `event:` line naming its data's type."""
    async with server.api(key) as api, \
            api.stream("POST", "/v1/responses", json={**body, "stream": True}) as sse:
        assert sse.status_code == 200 and sse.headers["content-type"].startswith("text/event-stream")
        text = (await sse.aread()).decode()
    events = []
    for block in text.strip().split("\n\n"):
        kind, payload = block.split("\n")
        event = orjson.loads(payload.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    if conformance.SPEC_AVAILABLE:
        for event in events:
            conformance.validate("ResponseStreamEvent", event)
    return events


@pytest.mark.parametrize(("model", "provider"), MODELS)
async def test_a_string_input_with_instructions_is_a_conforming_response_billed_as_reported(
        server: Server, sim: SimServer, model: str, provider: str) -> None:
    org = await server.new_org()
    async with client(server, org.key) as oai:
        raw = await oai.responses.with_raw_response.create(model=model, input="hello responses door",
                                                           instructions="answer briefly")
    assert raw.headers["x-alumia-route"] == "platform"
    body = orjson.loads(raw.content)
    if conformance.SPEC_AVAILABLE:
        conformance.validate("Response", body)
    response = raw.parse()
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.instructions == "answer briefly"
    assert response.output_text.startswith(f"Simulated reply from {provider}/{model}")
    assert response.output_text.endswith("hello responses door")
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    [record] = await records(server, org)
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (
        record["input_tokens"] + record["cache_read_tokens"] + record["cache_write_tokens"],
        record["output_tokens"])
    assert response.usage.output_tokens == words(response.output_text) > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert record["status"] == "ok" and record["provider"] == provider


async def test_item_input_reaches_the_provider_as_the_conversation_it_describes(server: Server) -> None:
    org = await server.new_org()
    items = [{"role": "developer", "content": "be terse"},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one two"}]},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "three"}]},
             {"role": "user", "content": "four five six"}]
    async with client(server, org.key) as oai:
        response = await oai.responses.create(model="gpt-5.6-luna", input=items)  # type: ignore[arg-type]
    # The simulator echoes the last user message and counts 4 + words per message it was sent.
    assert response.output_text.endswith("four five six")
    assert response.usage is not None and response.usage.input_tokens == (4 + 2) + (4 + 2) + (4 + 1) + (4 + 3)


@pytest.mark.parametrize(("model", "provider"), MODELS)
async def test_a_stream_sends_the_events_the_sdk_expects_and_completes_with_the_billed_usage(
        server: Server, model: str, provider: str) -> None:
    org = await server.new_org()
    async with client(server, org.key) as oai, \
            oai.responses.stream(model=model, input="stream this please") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    raw = await raw_events(server, org.key, {"model": model, "input": "stream this please"})
    assert [e["type"] for e in raw] == [e.type for e in events]
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text and text.startswith(f"Simulated reply from {provider}/{model}")
    record = (await records(server, org))[0]
    assert final.status == "completed" and final.usage is not None
    assert final.usage.output_tokens == record["output_tokens"] == words(text)
    assert final.usage.input_tokens == record["input_tokens"] + record["cache_read_tokens"]
    assert raw[-1]["response"]["usage"]["output_tokens"] == final.usage.output_tokens


async def test_create_with_stream_true_ends_incomplete_at_the_output_limit(server: Server) -> None:
    org = await server.new_org()
    async with client(server, org.key) as oai:
        stream = await oai.responses.create(model="gpt-5.6-luna", input="cut me short please",
                                            max_output_tokens=3, stream=True)
        events = [event async for event in stream]
    await raw_events(server, org.key, {"model": "gpt-5.6-luna", "input": "cut me short please",
                                       "max_output_tokens": 3})
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.usage is not None and last.response.usage.output_tokens == 3


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_previous_response_id_sends_the_first_turn_with_the_second(
        server: Server, sim: SimServer, stream: bool) -> None:
    org = await server.new_org()
    async with client(server, org.key) as oai:
        first = await oai.responses.create(model="gpt-5.6-luna", input="my name is ada",
                                           instructions="first instructions")
        ask = {"model": "gpt-5.6-luna", "input": "what is my name", "previous_response_id": first.id}
        if stream:
            async with oai.responses.stream(**ask) as events:  # type: ignore[arg-type]
                second = await events.get_final_response()
        else:
            second = await oai.responses.create(**ask)  # type: ignore[arg-type]
        items = await oai.responses.input_items.list(second.id)
    # Upstream got: the first user message, the first answer, then the new message (the first
    # request's instructions are not carried over, as OpenAI documents), by the simulator's count.
    expected = (4 + 4) + (4 + words(first.output_text)) + (4 + 4)
    assert second.usage is not None and second.usage.input_tokens == expected
    assert second.previous_response_id == first.id
    assert second.output_text.endswith("what is my name")
    # The second response's own input items are just its new message.
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [  # type: ignore[union-attr]
        ("message", "user", "what is my name")]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_function_call_and_its_output_round_trip(server: Server, sim: SimServer,
                                                         stream: bool) -> None:
    org = await server.new_org()
    ask: dict[str, Any] = {"model": "gpt-5.6-luna", "input": "weather in Paris?", "tools": [WEATHER],
                           "tool_choice": "required"}
    async with client(server, org.key) as oai:
        if stream:
            async with oai.responses.stream(**ask) as events:
                seen = [event async for event in events]
                called = await events.get_final_response()
            await raw_events(server, org.key, ask)
            kinds = [e.type for e in seen]
            assert "response.function_call_arguments.delta" in kinds
            done = next(e for e in seen if e.type == "response.function_call_arguments.done")
            assert done.arguments == '{"city":"sim"}' or orjson.loads(done.arguments) == {"city": "sim"}
        else:
            raw = await oai.responses.with_raw_response.create(**ask)
            if conformance.SPEC_AVAILABLE:
                conformance.validate("Response", orjson.loads(raw.content))
            called = raw.parse()
        [call] = called.output
        assert call.type == "function_call" and call.name == "weather"
        # The simulator fills arguments from the schema.
        assert orjson.loads(call.arguments) == {"city": "sim"}
        answered = await oai.responses.create(
            model="gpt-5.6-luna", previous_response_id=called.id, tools=[WEATHER],  # type: ignore[list-item]
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert answered.status == "completed" and answered.output[0].type == "message"
    # Upstream: the user message, the assistant's tool call (4), the tool message (4 + 1).
    assert answered.usage is not None and answered.usage.input_tokens == (4 + 3) + 4 + (4 + 1)


async def test_a_json_schema_text_format_reaches_the_provider_as_a_response_format(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    async with client(server, org.key) as oai:
        raw = await oai.responses.with_raw_response.create(
            model="gpt-5.6-luna", input="give json",
            text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}})
    body = orjson.loads(raw.content)
    if conformance.SPEC_AVAILABLE:
        conformance.validate("Response", body)
    assert body["text"]["format"] == {"type": "json_schema", "name": "answer", "schema": schema,
                                      "strict": True}
    assert sim.calls()[-1]["received"]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


async def test_reasoning_effort_reaches_each_provider_its_way_or_is_refused_by_its_name(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    async with client(server, org.key) as oai:
        await oai.responses.create(model="gpt-5.6-luna", input="think", reasoning={"effort": "low"})
        assert sim.calls()[-1]["received"]["reasoning_effort"] == "low"
        await oai.responses.create(model="claude-haiku-4-5", input="think", reasoning={"effort": "low"})
        assert sim.calls()[-1]["received"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        before = len(sim.calls())
        with pytest.raises(openai.BadRequestError) as raised:
            await oai.responses.create(model="mistral-large-2512", input="think", reasoning={"effort": "low"})
    assert raised.value.body["message"].startswith("reasoning.effort: ")  # type: ignore[index]
    assert len(sim.calls()) == before


async def test_json_schema_output_on_claude_comes_back_as_the_output_text(server: Server,
                                                                          sim: SimServer) -> None:
    org = await server.new_org()
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    async with client(server, org.key) as oai:
        answer = await oai.responses.create(
            model="claude-haiku-4-5", input="where?",
            text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}})
    assert set(orjson.loads(answer.output_text)) == {"city"}
    assert sim.calls()[-1]["received"]["output_config"]["format"]["schema"] == schema


async def test_a_stored_response_is_retrieved_listed_and_deleted(server: Server) -> None:
    org = await server.new_org()
    async with client(server, org.key) as oai:
        created = await oai.responses.create(model="gpt-5.6-luna", input=[
            {"role": "user", "content": "first"}, {"role": "assistant", "content": "second"},
            {"role": "user", "content": "third"}], metadata={"ticket": "42"})
        got = await oai.responses.retrieve(created.id)
        assert got.model_dump() == created.model_dump()
        assert got.metadata == {"ticket": "42"}
        raw = await oai.responses.input_items.with_raw_response.list(created.id, order="asc", limit=2)
        page = orjson.loads(raw.content)
        if conformance.SPEC_AVAILABLE:
            conformance.validate("ResponseItemList", page)
        assert [i["content"][0]["text"] for i in page["data"]] == ["first", "second"]
        assert page["has_more"] is True and page["first_id"] == page["data"][0]["id"]
        rest = await oai.responses.input_items.list(created.id, order="asc", after=page["last_id"])
        assert [i.content[0].text for i in rest.data] == ["third"]  # type: ignore[union-attr]
        newest_first = await oai.responses.input_items.list(created.id)
        assert [i.content[0].text for i in newest_first.data] == ["third", "second", "first"]  # type: ignore
        async with server.api(org.key) as api:
            deleted = await api.delete(f"/v1/responses/{created.id}")
        assert deleted.json() == {"id": created.id, "object": "response", "deleted": True}
        with pytest.raises(openai.NotFoundError):
            await oai.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await oai.responses.delete(created.id)
    async with server.db.read() as conn:  # the content is gone with the response
        row = await conn.execute(select(stored_responses).where(stored_responses.c.id == created.id))
        assert row.first() is None


async def test_store_false_keeps_nothing(server: Server) -> None:
    org = await server.new_org()
    async with client(server, org.key) as oai:
        created = await oai.responses.create(model="gpt-5.6-luna", input="forget me", store=False)
        assert created.store is False
        with pytest.raises(openai.NotFoundError):
            await oai.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await oai.responses.create(model="gpt-5.6-luna", input="again", previous_response_id=created.id)


async def test_another_orgs_response_is_not_found_anywhere(server: Server, sim: SimServer) -> None:
    owner, stranger = await server.new_org(), await server.new_org()
    async with client(server, owner.key) as oai:
        created = await oai.responses.create(model="gpt-5.6-luna", input="private words")
    before = len(sim.calls())
    async with server.api(stranger.key) as api:
        for response in [await api.get(f"/v1/responses/{created.id}"),
                         await api.get(f"/v1/responses/{created.id}/input_items"),
                         await api.delete(f"/v1/responses/{created.id}"),
                         await api.post("/v1/responses", json={"model": "gpt-5.6-luna", "input": "hi",
                                                               "previous_response_id": created.id})]:
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "NOT_FOUND"
            assert "private words" not in response.text
    assert len(sim.calls()) == before
    async with client(server, owner.key) as oai:  # still there for its own org
        assert (await oai.responses.retrieve(created.id)).id == created.id


async def test_a_response_past_its_retention_is_absent_and_swept(server: Server) -> None:
    org = await server.new_org()
    async with client(server, org.key) as oai:
        old = await oai.responses.create(model="gpt-5.6-luna", input="old words")
        kept = await oai.responses.create(model="gpt-5.6-luna", input="new words")
        days = server.settings.responses_retention_days
        async with server.db.write() as conn:
            await conn.execute(update(stored_responses).where(stored_responses.c.id == old.id)
                               .values(created_at=utcnow() - timedelta(days=days, minutes=1)))
        with pytest.raises(openai.NotFoundError):
            await oai.responses.retrieve(old.id)
        await sweep(server.db, None, days)
        assert (await oai.responses.retrieve(kept.id)).id == kept.id
    async with server.db.read() as conn:
        ids = {r.id for r in await conn.execute(select(stored_responses.c.id)
                                                .where(stored_responses.c.org_id == org.id))}
    assert ids == {kept.id}


@pytest.mark.parametrize(("field", "value", "named"), [
    ("tools", [{"type": "web_search"}], "tools[0].type"),
    ("background", True, "background"),
    ("include", ["reasoning.encrypted_content"], "include"),
    ("truncation", "auto", "truncation"),
    ("prompt", {"id": "pmpt_1"}, "prompt"),
    ("reasoning", {"effort": "low", "summary": "auto"}, "reasoning.summary"),
])
async def test_an_unsupported_field_is_a_400_naming_it_and_nothing_goes_upstream(
        server: Server, sim: SimServer, field: str, value: Any, named: str) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    async with server.api(org.key) as api:
        response = await api.post("/v1/responses",
                                  json={"model": "gpt-5.6-luna", "input": "hi", field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and named in error["message"]
    assert len(sim.calls()) == before
    assert await records(server, org) == []


async def test_byok_goes_with_the_orgs_key_and_charges_nothing(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    key = fake_key()
    async with server.api(org.key) as api:
        data(await api.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": key}), 201)
    async with client(server, org.key) as oai:
        raw = await oai.responses.with_raw_response.create(model="gpt-5.6-luna", input="bring my key")
    assert raw.headers["x-alumia-route"] == "byok"
    assert sim.calls()[-1]["keySha256"] == hashlib.sha256(key.encode()).hexdigest()
    [record] = await records(server, org)
    assert (record["route"], record["byok"], record["charged_microcents"]) == ("byok", True, 0)


async def test_the_platform_route_charges_the_exact_microcents(server: Server) -> None:
    org = await server.new_org()
    async with client(server, org.key) as oai:
        response = await oai.responses.create(model="gpt-5.6-luna", input="price me exactly " * 20)
    assert response.usage is not None
    prices = PRICES["gpt-5.6-luna"]
    cost = (response.usage.input_tokens * Decimal(prices["input"])
            + response.usage.output_tokens * Decimal(prices["output"])).quantize(Decimal(1), ROUND_HALF_UP)
    [record] = await records(server, org)
    assert record["charged_microcents"] == int(cost) > 0  # the fee is waived: nothing deposited
    async with server.db.read() as conn:
        entries = (await conn.execute(select(ledger_entries.c.amount_microcents)
                                      .where(ledger_entries.c.request_id == record["id"]))).all()
    assert [e[0] for e in entries] == [-int(cost)]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_call_the_balance_cannot_cover_is_a_402_before_anything_goes_upstream(
        server: Server, sim: SimServer, stream: bool) -> None:
    org = await server.new_org()  # $10.00 early-bird credit: hold all of it but 100 microcents
    now = utcnow()
    assert (await server.db.calls.reserve(Reserve(
        hold_id="req_fill_" + secrets.token_hex(6), org_id=org.id, amount=10_000_000 - 100, now=now,
        expires_at=now + timedelta(hours=1)))).admitted
    before = len(sim.calls())
    async with client(server, org.key) as oai:
        with pytest.raises(openai.APIStatusError) as raised:
            await oai.responses.create(model="gpt-5.6-luna", input="too dear", stream=stream)
    assert raised.value.status_code == 402
    assert raised.value.body["code"] == "PAYMENT_REQUIRED"  # type: ignore[index]
    assert len(sim.calls()) == before


async def test_the_call_is_attributed_to_the_agent_named_in_the_header(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        agent = data(await api.post("/api/v1/agents", json={"name": "Responder", "model": "gpt-5.6-luna"}),
                     201)
    async with client(server, org.key, **{"X-Alumia-Agent": agent["id"]}) as oai:
        await oai.responses.create(model="gpt-5.6-luna", input="who called")
    [record] = await records(server, org)
    assert record["agent_id"] == agent["id"]


async def test_a_stranger_is_refused_before_the_body_is_read(server: Server, sim: SimServer) -> None:
    before = len(sim.calls())
    async with client(server, "alm_test_" + "0" * 48) as oai:
        with pytest.raises(openai.AuthenticationError):
            await oai.responses.create(model="gpt-5.6-luna", input="hi")
        with pytest.raises(openai.AuthenticationError):
            await oai.responses.retrieve("resp_" + "0" * 48)
    assert len(sim.calls()) == before


async def test_a_stream_cut_at_its_hold_ends_incomplete_and_bills_what_was_delivered(server: Server) -> None:
    # The simulator's overrun makes the provider ignore the limit: the relay ends the stream at the hold.
    org = await server.new_org()
    events = await raw_events(server, org.key, {"model": "gpt-5.6-luna", "max_output_tokens": 8,
                                                "input": "one two three [[sim:overrun=400]]"})
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert 8 < len(text.split()) < 400  # past the limit (the hold's slack), but cut well short
    assert last["response"]["output"][0]["content"][0]["text"] == text
    [record] = await records(server, org)
    assert record["status"] == "reservation_reached"
    assert last["response"]["usage"]["output_tokens"] == record["output_tokens"]


async def test_a_provider_error_mid_stream_ends_the_response_failed(server: Server) -> None:
    org = await server.new_org()
    events = await raw_events(server, org.key, {"model": "gpt-5.6-luna",
                                                "input": "one two three [[sim:stream_error_after=2]]"})
    last = events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed" and last["response"]["error"]["code"] == "server_error"
    assert [e["type"] for e in events].count("response.output_text.delta") == 2
    [record] = await records(server, org)
    assert record["status"] != "ok"

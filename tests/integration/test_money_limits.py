"""What a non-streamed platform call may take: the hold covers every choice asked for, an answer past
its hold is cut to what the hold pays for, and an answer without usage is estimated, never free."""

import asyncio
import math

import orjson
import pytest
from sqlalchemy import select

from alumia.domain.catalog import load_catalog
from alumia.domain.estimate import estimate_input
from alumia.domain.pricing import FeePolicy, platform_charge, reservation
from alumia.domain.usage import TokenUsage
from alumia.sim.server import SimServer
from alumia.storage.tables import holds, orgs, usage_records

from harness import Org, Server

CATALOG = load_catalog()
NO_FEE = FeePolicy()  # deposits of 10,000 cents or less: the fee is waived


async def post(server: Server, org: Org, body: dict) -> tuple[int, dict]:
    async with server.api(org.key) as api:
        response = await api.post("/v1/chat/completions", content=orjson.dumps(body),
                                  headers={"Content-Type": "application/json"}, timeout=60)
    return response.status_code, response.json()


async def only_record(server: Server, org: Org) -> dict:
    async with server.db.read() as conn:
        [row] = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).all()
    return dict(row._mapping)


async def held(server: Server, org: Org) -> int:
    async with server.db.read() as conn:
        return (await conn.execute(select(orgs.c.held_microcents).where(orgs.c.id == org.id))).scalar_one()


async def test_the_hold_covers_every_choice_asked_for(server: Server, sim: SimServer) -> None:
    org = await server.new_org(deposit_cents=1000)
    model = CATALOG.model("gpt-5.6-luna")
    body = {"model": model.id, "n": 4, "max_completion_tokens": 64,
            "messages": [{"role": "user", "content": "four answers [[sim:hold]]"}]}
    raw = orjson.dumps(body)
    pending = asyncio.create_task(post(server, org, body))
    for _ in range(500):
        if sim.held() >= 1:
            break
        await asyncio.sleep(0.02)
    expected = reservation(model.prices, len(raw), 4 * 64, NO_FEE, 1000).total_microcents
    assert await held(server, org) == expected
    assert expected > reservation(model.prices, len(raw), 64, NO_FEE, 1000).total_microcents
    sim.release()
    status, answer = await pending
    assert status == 200, answer


async def test_a_call_whose_choices_do_not_fit_is_refused_before_the_provider(server: Server) -> None:
    org = await server.new_org()  # the early-bird credit only
    model = CATALOG.model("gpt-5.6-sol")
    body = {"model": model.id, "n": 128, "max_completion_tokens": 64_000,
            "messages": [{"role": "user", "content": "many answers"}]}
    status, answer = await post(server, org, body)
    assert status == 402, answer
    worst = reservation(model.prices, len(orjson.dumps(body)), 128 * 64_000, NO_FEE, 0).total_microcents
    assert f"may cost up to {worst} microcents" in answer["error"]["message"]


async def test_an_answer_past_its_hold_is_cut_to_what_the_hold_pays_for(server: Server) -> None:
    org = await server.new_org(deposit_cents=1000)
    model = CATALOG.model("gpt-5.6-luna")
    body = {"model": model.id, "max_completion_tokens": 8,
            "messages": [{"role": "user", "content": "say little [[sim:overrun=3000]]"}]}
    status, answer = await post(server, org, body)
    assert status == 200, answer
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "length"
    record = await only_record(server, org)
    async with server.db.read() as conn:
        hold = (await conn.execute(select(holds).where(holds.c.id == record["id"]))).one()
    usage = TokenUsage(record["input_tokens"], record["output_tokens"])
    charge = platform_charge(model.prices, usage, NO_FEE, 1000).total_microcents
    assert record["status"] == "reservation_reached" and record["usage_estimated"] is True
    assert record["charged_microcents"] == charge <= hold.amount_microcents
    # One more output token would not have fitted: the cut is as long as the hold allows.
    more = TokenUsage(record["input_tokens"], record["output_tokens"] + 1)
    assert platform_charge(model.prices, more, NO_FEE, 1000).total_microcents > hold.amount_microcents
    # The text delivered is the same share of the full answer (3,000 words more) as the tokens billed.
    assert 0 < len(choice["message"]["content"].split()) < 3000 * 0.1


@pytest.mark.parametrize("model_id", ["deepseek-v4-flash", "claude-haiku-4-5"])
async def test_n_is_refused_where_the_provider_does_not_honour_it(server: Server, sim: SimServer,
                                                                  model_id: str) -> None:
    org = await server.new_org(deposit_cents=1000)
    received = len(sim.calls())
    status, answer = await post(server, org, {"model": model_id, "n": 2,
                                              "messages": [{"role": "user", "content": "two"}]})
    assert status == 400, answer
    assert answer["error"]["code"] == "BAD_REQUEST" and "n > 1" in answer["error"]["message"]
    assert len(sim.calls()) == received
    async with server.db.read() as conn:
        assert (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).all() == []


async def test_n_choices_are_sent_and_each_is_billed(server: Server, sim: SimServer) -> None:
    org = await server.new_org(deposit_cents=1000)
    model = CATALOG.model("gpt-5.6-luna")
    status, answer = await post(server, org, {"model": model.id, "n": 3, "max_completion_tokens": 5,
                                              "messages": [{"role": "user", "content": "three of them"}]})
    assert status == 200, answer
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2]
    received = sim.calls()[-1]["received"]
    assert (received["n"], received["max_completion_tokens"]) == (3, 5)
    record = await only_record(server, org)
    assert record["output_tokens"] == 15  # five for each choice
    usage = TokenUsage(record["input_tokens"], record["output_tokens"])
    assert record["charged_microcents"] == platform_charge(model.prices, usage, NO_FEE, 1000).total_microcents


@pytest.mark.parametrize("fault", ["no_usage", "partial_usage"])
@pytest.mark.parametrize(("door", "model_id"), [
    ("chat", "gpt-5.6-luna"), ("chat", "claude-haiku-4-5"),
    ("chat", "gemini-3.7-flash"), ("messages", "claude-haiku-4-5")])
async def test_an_answer_without_usage_is_estimated_not_free(server: Server, door: str, model_id: str,
                                                             fault: str) -> None:
    org = await server.new_org(deposit_cents=1000)
    model = CATALOG.model(model_id)
    messages = [{"role": "user", "content": f"how much is this [[sim:{fault}]]"}]
    async with server.api(org.key) as api:
        if door == "chat":
            response = await api.post("/v1/chat/completions", json={"model": model.id, "messages": messages})
            text = response.json()["choices"][0]["message"]["content"]
        else:
            response = await api.post("/v1/messages", json={"model": model.id, "messages": messages,
                                                            "max_tokens": 256})
            text = response.json()["content"][0]["text"]
    assert response.status_code == 200, response.text
    record = await only_record(server, org)
    expected = TokenUsage(estimate_input(messages), math.ceil(len(text.encode()) / 4))
    assert (record["input_tokens"], record["output_tokens"]) == (expected.input_tokens,
                                                                 expected.output_tokens)
    assert record["usage_estimated"] is True
    charge = platform_charge(model.prices, expected, NO_FEE, 1000).total_microcents
    assert record["charged_microcents"] == charge > 0

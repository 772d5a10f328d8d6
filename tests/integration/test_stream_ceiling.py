"""A platform stream ends at its reservation.

The simulator's `[[sim:overrun=N]]` makes the provider ignore max_tokens and send N words more than
the full reply, as a misbehaving provider would. The gateway must stop relaying at the frame that
would bill past the hold, end the stream cleanly with finish_reason "length", and bill exactly the
delivered text; a BYOK stream (no hold) is relayed whole.
"""

import math

import orjson
import pytest
from sqlalchemy import select

from alumia.domain.catalog import load_catalog
from alumia.domain.pricing import FeePolicy, platform_charge
from alumia.domain.usage import TokenUsage
from alumia.storage.tables import holds, ledger_entries, usage_records

from harness import Org, Server, data, fake_key

MODELS = {"openai": "gpt-5.6-luna", "anthropic": "claude-haiku-4-5", "gemini": "gemini-3.7-flash"}
PROMPT = "one two three four five six [[sim:overrun=400]]"


async def stream(server: Server, org: Org, model: str, path: str = "/v1/chat/completions") -> list[dict]:
    """The chunks a streaming call delivered, with [DONE] as the string "[DONE]"."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True,
            "max_tokens": 8, "stream_options": {"include_usage": True}}
    async with server.api(org.key) as api:
        response = await api.post(path, content=orjson.dumps(body),
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    payloads = [f[6:] for f in response.text.split("\n\n") if f.startswith("data: ")]
    return [p if p == "[DONE]" else orjson.loads(p) for p in payloads]


def fragments(chunks: list) -> list[str]:
    """The content fragments in delivery order."""
    return [c["choices"][0]["delta"]["content"] for c in chunks
            if isinstance(c, dict) and c.get("choices") and c["choices"][0].get("delta", {}).get("content")]


async def record_and_hold(server: Server, org: Org) -> tuple[dict, dict]:
    async with server.db.read() as conn:
        record = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).one()
        hold = (await conn.execute(select(holds).where(holds.c.id == record.id))).one()
    return dict(record._mapping), dict(hold._mapping)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_stream_that_reaches_its_hold_ends_with_length_and_bills_what_was_delivered(
        server: Server, provider: str) -> None:
    model = MODELS[provider]
    # The same call on a BYOK key has no hold: it shows the whole overrunning answer.
    byok = await server.new_org()
    async with server.api(byok.key) as api:
        data(await api.post("/api/v1/billing/byok-keys",
                            json={"provider": provider, "apiKey": fake_key()}), 201)
    whole = fragments(await stream(server, byok, model))
    assert len("".join(whole).split()) > 400  # the provider really ignored max_tokens=8

    org = await server.new_org(deposit_cents=5_000)
    async with server.api(org.key) as api:
        start = data(await api.get("/api/v1/billing"))["balance"]["balanceMicrocents"]
    chunks = await stream(server, org, model)
    got = fragments(chunks)
    assert chunks[-1] == "[DONE]"
    assert not any(isinstance(c, dict) and "error" in c for c in chunks)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks
                if isinstance(c, dict) and c.get("choices") and c["choices"][0].get("finish_reason")]
    assert finishes == ["length"]
    assert 0 < len(got) < len(whole) and got == whole[:len(got)]  # a prefix, cut short
    assert len("".join(got).split()) > 8  # past max_tokens: the hold's slack was used, not wasted

    record, hold = await record_and_hold(server, org)
    delivered = len("".join(got).encode())
    assert record["status"] == "reservation_reached" and record["usage_estimated"] is True
    assert record["output_tokens"] == math.ceil(delivered / 4)  # billed tokens are the delivered ones
    prices = load_catalog().model(model).prices

    def bill(output_tokens: int) -> int:  # deposits of $50 are under the fee waiver's $100
        usage = TokenUsage(input_tokens=record["input_tokens"], output_tokens=output_tokens)
        return platform_charge(prices, usage, FeePolicy(), cumulative_deposits_cents=5_000).total_microcents

    reserved = hold["amount_microcents"]
    charge = min(bill(record["output_tokens"]), reserved)  # never past the hold
    assert record["charged_microcents"] == charge
    # The cut is decided on a low count of the text (a token per 6 bytes): what was delivered fits
    # the hold, and the fragment held back would not have.
    held_back = len(whole[len(got)].encode())
    assert bill(math.ceil(delivered / 6)) <= reserved < bill(math.ceil((delivered + held_back) / 6))
    assert (hold["status"], hold["charged_microcents"]) == ("settled", charge)

    usage_chunk = next(c for c in chunks if isinstance(c, dict) and c.get("usage"))
    assert usage_chunk["usage"]["completion_tokens"] == record["output_tokens"]
    async with server.db.read() as conn:
        entries = (await conn.execute(select(ledger_entries.c.amount_microcents)
                                      .where(ledger_entries.c.request_id == record["id"]))).all()
    assert [e[0] for e in entries] == [-charge]
    async with server.api(org.key) as api:
        assert data(await api.get("/api/v1/billing"))["balance"]["balanceMicrocents"] == start - charge


async def test_the_anthropic_front_door_reports_max_tokens_at_the_hold(server: Server) -> None:
    org = await server.new_org(deposit_cents=5_000)
    body = {"model": MODELS["openai"], "max_tokens": 8, "stream": True,
            "messages": [{"role": "user", "content": PROMPT}]}
    async with server.api(org.key) as api:
        response = await api.post("/v1/messages", content=orjson.dumps(body),
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    events = [orjson.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    stops = [e["delta"]["stop_reason"] for e in events if e.get("type") == "message_delta"]
    assert stops == ["max_tokens"]
    assert events[-1]["type"] == "message_stop"
    record, _hold = await record_and_hold(server, org)
    assert record["status"] == "reservation_reached"

"""Cached, cache-write and reasoning tokens read from every provider's own usage shape, priced once.

The simulator reports usage exactly as each provider shapes it ([[sim:cached=N;reasoning=M;...]]):
prompt counts that include or exclude the cache, reasoning inside or outside completion tokens,
Moonshot's and Groq's usage in their own places. Whatever the shape, the gateway must record the same
canonical counts and charge cost = input x in + cached x cached_in + writes x cache_write + output x out.
"""

import tomllib
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

import orjson
import pytest
from sqlalchemy import select

from alumia.storage.tables import usage_records

from harness import Server

DATA = resources.files("alumia.domain.data")
MODELS = {}
for entry in tomllib.loads(DATA.joinpath("models.toml").read_text())["model"]:
    MODELS.setdefault(entry["provider"], entry)
FREE = {"groq", "nvidia"}
CACHE_WRITES = {"anthropic", "openai"}  # the providers whose usage reports cache writes
USER = "Count my cached tokens"
PROMPT = 4 + 4
CACHED, REASONING, WRITES = 3, 5, 2


def expected_charge(entry: dict, usage: dict, fee: bool) -> int:
    def price(name: str, fallback: str = "input") -> Decimal:
        return Decimal(entry.get(name, entry[fallback]))

    cost = (usage["input_tokens"] * price("input") + usage["output_tokens"] * price("output")
            + usage["cache_read_tokens"] * price("cached_input")
            + usage["cache_write_tokens"] * price("cache_write")).quantize(Decimal(1), ROUND_HALF_UP)
    return int(cost + ((cost * 550 / Decimal(10_000)).quantize(Decimal(1), ROUND_HALF_UP) if fee else 0))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_usage_is_read_once_from_each_providers_shape(server: Server, provider: str,
                                                            stream: bool) -> None:
    entry = MODELS[provider]
    writes = WRITES if provider in CACHE_WRITES else 0
    directive = f"[[sim:cached={CACHED};reasoning={REASONING}" + (f";cache_write={writes}" if writes else "")
    directive += "]]"
    org = await server.new_org(deposit_cents=10_001)
    body = {"model": entry["id"], "messages": [{"role": "user", "content": f"{USER} {directive}"}],
            "stream": stream}
    async with server.api(org.key) as api:
        response = await api.post("/v1/chat/completions", content=orjson.dumps(body),
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    reply_words = len(f"Simulated reply from {provider}/{entry['id']}: {USER}".split())
    expected = {"input_tokens": PROMPT - CACHED - writes, "cache_read_tokens": CACHED,
                "cache_write_tokens": writes, "output_tokens": reply_words + REASONING}
    async with server.db.read() as conn:
        record = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).one()
    assert {k: record._mapping[k] for k in expected} == expected
    assert record.usage_estimated is False
    charge = 0 if provider in FREE else expected_charge(entry, expected, fee=True)
    assert record.charged_microcents == charge

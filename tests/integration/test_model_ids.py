"""Model ids: GET /v1/models/{id}, and `provider/model` aliases wherever a model id is accepted."""

import openai
import pytest
from sqlalchemy import select

from alumia.domain.catalog import load_catalog
from alumia.domain.pricing import FeePolicy, platform_charge
from alumia.domain.usage import TokenUsage
from alumia.sim.server import SimServer
from alumia.storage.tables import agents, usage_records

import conformance
from harness import Org, Server, data

HELLO = [{"role": "user", "content": "hello"}]


def client(server: Server, org: Org) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key, max_retries=0)


@pytest.mark.parametrize(("asked", "catalog_id", "owner"), [
    ("gpt-5.6-luna", "gpt-5.6-luna", "openai"),
    ("openai/gpt-5.6-luna", "gpt-5.6-luna", "openai"),
    ("anthropic/claude-haiku-4-5", "claude-haiku-4-5", "anthropic"),
    ("meta/llama-3.3-70b-instruct", "meta/llama-3.3-70b-instruct", "nvidia"),  # a catalog id with a slash
    ("nvidia/meta/llama-3.3-70b-instruct", "meta/llama-3.3-70b-instruct", "nvidia"),
])
async def test_retrieve_answers_the_catalog_model_for_an_id_or_an_alias(
        server: Server, asked: str, catalog_id: str, owner: str) -> None:
    org = await server.new_org()
    model = await client(server, org).models.retrieve(asked)
    assert (model.id, model.object, model.owned_by) == (catalog_id, "model", owner)
    async with server.api(org.key) as api:
        raw = await api.get(f"/v1/models/{asked}")
    assert raw.status_code == 200
    conformance.validate("Model", raw.json())


@pytest.mark.parametrize("asked", ["no-such-model", "groq/gpt-5.6-luna", "openai/no-such-model"])
async def test_an_unknown_model_or_an_alias_under_another_provider_is_a_404(server: Server,
                                                                            asked: str) -> None:
    org = await server.new_org()
    with pytest.raises(openai.NotFoundError) as caught:
        await client(server, org).models.retrieve(asked)
    body = caught.value.response.json()
    conformance.validate("ErrorResponse", body)
    assert body["error"]["code"] == "NOT_FOUND"


async def test_retrieve_authenticates_before_it_looks_anything_up(server: Server) -> None:
    async with server.api(None) as api:
        for path in ("/v1/models/gpt-5.6-luna", "/v1/models/no-such-model"):
            response = await api.get(path)
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_a_call_by_alias_sends_the_providers_own_id_and_is_charged_as_the_model(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    answer = await client(server, org).chat.completions.create(model="openai/gpt-5.6-luna", messages=HELLO,
                                                                max_tokens=50)
    [seen] = sim.calls()[before:]
    assert seen["model"] == "gpt-5.6-luna" and seen["received"]["models"] == ["gpt-5.6-luna"]
    async with server.db.read() as conn:
        record = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).one()
    assert record.model == "gpt-5.6-luna"
    assert answer.usage is not None
    usage = TokenUsage(input_tokens=answer.usage.prompt_tokens, output_tokens=answer.usage.completion_tokens)
    expected = platform_charge(load_catalog().model("gpt-5.6-luna").prices, usage, FeePolicy(), 0)
    assert record.charged_microcents == expected.total_microcents > 0


async def test_an_alias_under_another_provider_is_refused_before_upstream(server: Server,
                                                                          sim: SimServer) -> None:
    org = await server.new_org()
    before = len(sim.calls())
    with pytest.raises(openai.NotFoundError):
        await client(server, org).chat.completions.create(model="groq/gpt-5.6-luna", messages=HELLO)
    assert len(sim.calls()) == before


async def test_an_agent_given_an_alias_keeps_the_catalog_id(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        body = {"name": "Scout", "model": "openai/gpt-5.6-luna"}
        created = data(await api.post("/api/v1/agents", json=body), 201)
    async with server.db.read() as conn:
        stored = (await conn.execute(select(agents.c.model).where(agents.c.id == created["id"]))).scalar_one()
    assert stored == "gpt-5.6-luna"
    assert created["model"] == "gpt-5.6-luna"

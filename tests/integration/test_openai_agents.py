"""The openai-agents SDK's default Agent (it speaks the Responses API) runs a function tool to completion
through the gateway, on a model of each wire format, over real HTTP on both databases."""

import openai
import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool
from sqlalchemy import select

from alumia.sim.server import SimServer
from alumia.storage.tables import usage_records

from harness import Server

MODELS = ["gpt-5.6-luna", "claude-haiku-4-5", "gemini-3.7-flash"]


@pytest.mark.parametrize("model", MODELS)
async def test_an_agent_calls_its_tool_and_answers(server: Server, sim: SimServer, model: str) -> None:
    org = await server.new_org()
    asked: list[str] = []

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny in {city or 'the city'}"

    client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key, max_retries=0)
    # The SDK's default model is the Responses API; the tool is required on the first turn (the
    # simulator calls a tool only when told to), and the SDK resets that after the call, as it does.
    agent = Agent(name="Assistant", instructions="Use the weather tool, then answer.", tools=[weather],
                  model=OpenAIResponsesModel(model=model, openai_client=client),
                  model_settings=ModelSettings(tool_choice="required"))
    before = len(sim.calls())
    result = await Runner.run(agent, "What is the weather in Paris?",
                              run_config=RunConfig(tracing_disabled=True))
    assert len(asked) == 1  # the tool ran once
    assert isinstance(result.final_output, str) and result.final_output
    upstream = sim.calls()[before:]
    assert len(upstream) == 2  # the turn that called the tool, and the one that answered
    async with server.db.read() as conn:
        rows = (await conn.execute(select(usage_records.c.api, usage_records.c.status, usage_records.c.model,
                                          usage_records.c.charged_microcents)
                                   .where(usage_records.c.org_id == org.id))).all()
    assert [(r.api, r.status, r.model) for r in rows] == [("responses", "ok", model)] * 2
    assert all(r.charged_microcents > 0 for r in rows)  # both turns paid from the balance
    await client.close()

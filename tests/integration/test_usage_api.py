"""Each usage record says which front door its call came through (usage_records.api, migration 0011)."""

import anthropic
import openai
from sqlalchemy import select

from alumia.storage.tables import usage_records

from harness import Org, Server

HELLO = [{"role": "user", "content": "hello"}]


async def apis_recorded(server: Server, org: Org) -> list[str]:
    async with server.db.read() as conn:
        rows = await conn.execute(select(usage_records.c.api).where(usage_records.c.org_id == org.id)
                                  .order_by(usage_records.c.created_at))
        return [row[0] for row in rows]


async def test_every_door_names_itself_on_the_usage_record(server: Server) -> None:
    org = await server.new_org()
    oai = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key, max_retries=0)
    claude = anthropic.AsyncAnthropic(base_url=server.base_url, api_key=org.key, max_retries=0)
    await oai.chat.completions.create(model="gpt-5.6-luna", messages=HELLO, max_tokens=20)  # type: ignore[arg-type]
    assert await apis_recorded(server, org) == ["chat"]
    await claude.messages.create(model="claude-haiku-4-5", messages=HELLO, max_tokens=20)  # type: ignore[arg-type]
    await oai.responses.create(model="gemini-3.7-flash", input="hello", max_output_tokens=20)
    await oai.embeddings.create(model="text-embedding-3-small", input="hello")
    async with oai.chat.completions.with_streaming_response.create(
            model="gpt-5.6-luna", messages=HELLO, max_tokens=20, stream=True) as streamed:  # type: ignore[arg-type]
        async for _ in streamed.iter_lines():
            pass
    assert await apis_recorded(server, org) == ["chat", "messages", "responses", "embeddings", "chat"]

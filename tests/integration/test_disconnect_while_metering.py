"""A client that leaves a stream while its call is being metered cannot cut the metering short.

Found by the money simulation: on SQLite the request's cancellation interrupted the metering
transaction, the dropped connection kept the database's write lock, and every later write of every
process failed. Here the test holds the lock the metering needs, so the client's disconnect lands
exactly while the gateway waits for it.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from sqlalchemy import select

from alumia.sim.server import SimServer
from alumia.storage.db import Database
from alumia.storage.tables import holds, orgs, usage_records

from harness import Server, data

BODY = orjson.dumps({"model": "gpt-5.6-luna", "stream": True,
                     "messages": [{"role": "user", "content": "one two three [[sim:hold]]"}]})


@asynccontextmanager
async def writes_blocked(db: Database, org_id: str) -> AsyncIterator[None]:
    """SQLite: the write lock (BEGIN IMMEDIATE). PostgreSQL: the org's row, FOR UPDATE."""
    async with db.write() as conn:
        await conn.execute(select(orgs.c.id).where(orgs.c.id == org_id).with_for_update())
        yield


async def eventually(check, seconds: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_client_leaving_during_metering_does_not_cut_it_short(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        start = data(await api.get("/api/v1/billing"))["balance"]["balanceMicrocents"]
        request = api.build_request("POST", "/v1/chat/completions", content=BODY,
                                    headers={"Content-Type": "application/json"})
        sending = asyncio.create_task(api.send(request, stream=True))
        await eventually(lambda: asyncio.to_thread(lambda: sim.held() == 1))  # reserved, upstream now
        async with writes_blocked(server.db, org.id):
            assert sim.release() == 1
            response = await sending
            request_id = response.headers["x-alumia-request-id"]
            seen = b""
            async for piece in response.aiter_bytes():
                seen += piece
                if b'"finish_reason":"stop"' in seen.replace(b" ", b""):
                    break  # the whole answer is here; the gateway now waits to meter it
            await asyncio.sleep(0.5)
            await response.aclose()  # the client leaves while the metering waits for the lock
            await asyncio.sleep(1.0)  # time for the server to see the disconnect and cancel the request
        assert b"[DONE]" not in seen

        async def recorded() -> bool:
            async with server.db.read() as conn:
                return (await conn.execute(select(usage_records.c.id)
                                           .where(usage_records.c.id == request_id))).first() is not None
        await eventually(recorded)
        async with server.db.read() as conn:
            record = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).one()
            hold = (await conn.execute(select(holds).where(holds.c.id == request_id))).one()
        # The metering that was under way finished, once: the answer was whole, so it is "ok".
        assert (record.id, record.status, record.usage_estimated) == (request_id, "ok", False)
        assert (hold.status, hold.charged_microcents) == ("settled", record.charged_microcents)
        # And the database still takes writes: the next call is metered as usual.
        follow = await api.post("/v1/chat/completions", content=BODY.replace(b"[[sim:hold]]", b""),
                                headers={"Content-Type": "application/json"})
        assert follow.status_code == 200, follow.text
        balance = data(await api.get("/api/v1/billing"))["balance"]["balanceMicrocents"]
    async with server.db.read() as conn:
        charges = (await conn.execute(select(usage_records.c.charged_microcents)
                                      .where(usage_records.c.org_id == org.id))).scalars().all()
    assert len(charges) == 2 and balance == start - sum(charges)
    assert "database is locked" not in server.log_text()

"""A provider that misbehaves on purpose: redirects that would carry the key away, and bodies far too big.

The hostile upstream is the test's own aiohttp server on a port-0 socket. Each call picks its misdeed
with a word in the message (`mode:<name>`); everything under `/redirect-all/` answers 307 to a catcher
that counts what reaches it. The gateway must never follow a redirect with a key (the catcher sees
nothing) and must read every upstream body with a cap (its memory does not grow with the body).
"""

import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from sqlalchemy import select

from alumia.sim.env import sim_env
from alumia.sim.server import SimServer
from alumia.storage.tables import usage_records

from harness import Org, Server, fake_key, running_server

ANSWER_CAP = 256 * 1024
HUGE = 200 * 1024 * 1024  # the 200 MB error body of the issue


class Hostile:
    """The misbehaving provider and the catcher its redirects point to."""

    def __init__(self) -> None:
        self.caught: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _catch(self, request: web.Request) -> web.Response:
        self.caught.append(dict(request.headers))
        return web.json_response({"error": {"message": "caught"}}, status=401)

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{self.url}/catcher{request.path}")

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        mode = (m.group(1).decode() if (m := re.search(rb"mode:(\w+)", body)) else "ok")
        if mode == "redirect":
            raise web.HTTPTemporaryRedirect(f"{self.url}/catcher/openai")
        if mode in ("huge_error", "huge_answer"):
            response = web.StreamResponse(status=500 if mode == "huge_error" else 200,
                                          headers={"Content-Type": "application/json"})
            await response.prepare(request)
            chunk = b"x" * (1024 * 1024)
            await response.write(b'{"error": {"message": "')
            try:
                for _ in range(HUGE // len(chunk)):
                    await response.write(chunk)
            except (ConnectionResetError, RuntimeError):  # the gateway stopped reading: as it should
                pass
            return response
        return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                                  "model": "gpt-5.6-luna", "choices": [
                                      {"index": 0, "message": {"role": "assistant", "content": "hi"},
                                       "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/catcher/{tail:.*}", self._catch)
        app.router.add_route("*", "/redirect-all/{tail:.*}", self._redirect)
        app.router.add_post("/openai/v1/chat/completions", self._openai)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture(scope="module")
async def hostile() -> AsyncIterator[Hostile]:
    upstream = Hostile()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def gateway(request: pytest.FixtureRequest, hostile: Hostile, sim: SimServer,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A server whose openai, mistral, anthropic and gemini upstreams are the hostile one."""
    env = {**sim_env(sim.host, sim.port),
           "ALUMIA_BASE_URL_OPENAI": f"{hostile.url}/openai/v1",
           "ALUMIA_BASE_URL_MISTRAL": f"{hostile.url}/redirect-all/mistral/v1",
           "ALUMIA_BASE_URL_ANTHROPIC": f"{hostile.url}/redirect-all/anthropic",
           "ALUMIA_BASE_URL_GEMINI": f"{hostile.url}/redirect-all/gemini",
           "ALUMIA_MAX_UPSTREAM_BODY_BYTES": str(ANSWER_CAP)}
    data_dir: Path = tmp_path_factory.mktemp(f"hostile-{request.param}")
    async with running_server(request.param, data_dir, env, f"hostile-{request.param}") as srv:
        yield srv


async def chat(server: Server, org: Org, model: str, text: str) -> tuple[int, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    async with server.api(org.key) as api:
        response = await api.post("/v1/chat/completions", content=orjson.dumps(body),
                                  headers={"Content-Type": "application/json"}, timeout=60)
    return response.status_code, response.json()


async def records(server: Server, org: Org) -> list[dict]:
    async with server.db.read() as conn:
        rows = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).all()
    return [dict(row._mapping) for row in rows]


def rss_kib(server: Server) -> int:
    status = Path(f"/proc/{server.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


@pytest.mark.parametrize("model", ["gpt-5.6-luna", "mistral-large-2512", "claude-haiku-4-5",
                                   "gemini-3.7-flash"])
async def test_a_redirect_is_an_upstream_error_and_the_key_goes_nowhere(
        gateway: Server, hostile: Hostile, model: str) -> None:
    org = await gateway.new_org(deposit_cents=1000)
    hostile.caught.clear()
    status, body = await chat(gateway, org, model, "hello mode:redirect")
    assert status == 502, body
    assert "redirect" in body["error"]["message"]
    assert hostile.caught == []  # not one hop: neither the platform key nor anything else went there
    [record] = await records(gateway, org)
    assert (record["status"], record["http_status"], record["charged_microcents"]) == ("error", 502, 0)


@pytest.mark.parametrize("provider", ["mistral", "anthropic", "gemini"])
async def test_the_key_check_on_add_does_not_follow_a_redirect(
        gateway: Server, hostile: Hostile, provider: str) -> None:
    org = await gateway.new_org()
    hostile.caught.clear()
    key = fake_key("sk-ant-test-" if provider == "anthropic" else "sk-test-")
    async with gateway.api(org.key) as api:
        response = await api.post("/api/v1/billing/byok-keys", json={"provider": provider, "apiKey": key})
    assert hostile.caught == []
    assert response.status_code == 201, response.text
    assert response.json()["data"]["verification"] == "unverified"
    assert key not in response.text


async def test_a_huge_error_body_is_read_only_to_its_cap(gateway: Server, hostile: Hostile) -> None:
    org = await gateway.new_org(deposit_cents=1000)
    before = rss_kib(gateway)
    status, body = await chat(gateway, org, "gpt-5.6-luna", "mode:huge_error")
    assert status == 502, body
    assert body["error"]["code"] == "UPSTREAM_ERROR"
    assert len(orjson.dumps(body)) < 2 * 64 * 1024
    # 200 MB were offered; reading them whole raised memory by hundreds of MB. Allow 50 MB of noise.
    assert rss_kib(gateway) - before < 50 * 1024
    [record] = await records(gateway, org)
    assert record["charged_microcents"] == 0


async def test_an_answer_over_the_cap_is_the_providers_error(gateway: Server, hostile: Hostile) -> None:
    org = await gateway.new_org(deposit_cents=1000)
    async with gateway.api(org.key) as api:
        balance = (await api.get("/api/v1/billing")).json()["data"]["balance"]["balanceMicrocents"]
    before = rss_kib(gateway)
    status, body = await chat(gateway, org, "gpt-5.6-luna", "mode:huge_answer")
    assert status == 502, body
    assert body["error"]["code"] == "BAD_GATEWAY"
    assert str(ANSWER_CAP) in body["error"]["message"]
    assert rss_kib(gateway) - before < 50 * 1024
    [record] = await records(gateway, org)
    assert (record["status"], record["error_code"], record["charged_microcents"]) == (
        "error", "UPSTREAM_TOO_LARGE", 0)
    async with gateway.api(org.key) as api:
        after = (await api.get("/api/v1/billing")).json()["data"]["balance"]["balanceMicrocents"]
    assert after == balance  # the hold was released whole
    # The next call on the same connection pool still works: nothing was left half-read.
    assert (await chat(gateway, org, "gpt-5.6-luna", "hello"))[0] == 200

"""The gateway in process over a real database, calling a hostile upstream of the test's own over HTTP.

The upstream is a small aiohttp server on a port-0 socket on 127.0.0.1; every provider's
`ALUMIA_BASE_URL_<PROVIDER>` points at `/<provider>` on it, and each test scripts its answer. The
gateway runs in this process (httpx's ASGI transport, its lifespan entered), and every log record of
every logger is kept, at DEBUG and before any redacting filter, so a test can search all of it.
"""

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web
from sqlalchemy import select

from alumia.app import create_app
from alumia.config import Settings
from alumia.domain.catalog import PROVIDER_NAMES
from alumia.services import accounts
from alumia.storage.db import Database
from alumia.storage.migrate import upgrade
from alumia.storage.tables import holds, ledger_entries, usage_records

from harness import Org, drop_pg_database, fresh_database

# An upstream answer: the request, the provider it was addressed to, and the key it carried.
Script = Callable[[web.Request, str, str], Awaitable[web.StreamResponse]]


def key_of(request: web.Request) -> str:
    """The provider key a request carried, whichever header its wire format uses."""
    bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return bearer or request.headers.get("x-api-key") or request.headers.get("x-goog-api-key") or ""


async def sse(request: web.Request, frames: list[bytes]) -> web.StreamResponse:
    """A 200 event stream of these frames, written one by one."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for frame in frames:
        await response.write(frame)
    await response.write_eof()
    return response


@dataclass
class Upstream:
    """The hostile upstream: answers key checks (GET .../models) with 200, and the rest by `script`."""

    script: Script | None = None
    keys_seen: list[str] = field(default_factory=list)
    base_url: str = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        provider = request.path.strip("/").split("/")[0]
        key = key_of(request)
        self.keys_seen.append(key)
        if request.method == "GET" and request.path.endswith("/models"):
            return web.json_response({"object": "list", "data": []})
        assert self.script is not None, "the test set no script for its upstream"
        return await self.script(request, provider, key)

    @asynccontextmanager
    async def running(self) -> AsyncIterator["Upstream"]:
        """Serve on 127.0.0.1, on a port the kernel picks while binding."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        try:
            yield self
        finally:
            await runner.cleanup()


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Gateway:
    """The app, a client for it, its settings and a database handle for the test's own reads."""

    client: httpx.AsyncClient
    settings: Settings
    db: Database
    log: _Keep

    def log_text(self) -> str:
        """Every log record so far, formatted with its traceback if it had one."""
        return "\n".join(self.log.lines)

    def platform_key(self, provider: str) -> str:
        """The platform key the gateway was given for a provider."""
        return self.settings.platform_keys[provider].get_secret_value()

    async def new_org(self, *, deposit_cents: int = 0) -> Org:
        """A new org with its owner's API key, and a deposit through the API when asked."""
        slug = "org-" + secrets.token_hex(5)
        created = await accounts.create_org(self.db, self.settings, slug=slug, owner_email=f"o@{slug}.test")
        key = await accounts.create_api_key_for(self.db, self.settings, org_slug=slug, user_email=None)
        org = Org(slug=slug, id=created["id"], owner_email=f"o@{slug}.test", key=key["key"])
        if deposit_cents:
            response = await self.client.post("/api/v1/billing/deposit", json={"amountCents": deposit_cents},
                                              headers=auth(org))
            assert response.status_code == 201, response.text
        return org

    async def record_hold_entries(self, org: Org) -> tuple[dict, dict | None, list[int]]:
        """The org's one usage record, its hold (if any) and the amounts of its ledger entries."""
        async with self.db.read() as conn:
            record = (await conn.execute(select(usage_records).where(usage_records.c.org_id == org.id))).one()
            hold = (await conn.execute(select(holds).where(holds.c.id == record.id))).first()
            entries = (await conn.execute(select(ledger_entries.c.amount_microcents)
                                          .where(ledger_entries.c.request_id == record.id))).all()
        return dict(record._mapping), dict(hold._mapping) if hold else None, [e[0] for e in entries]


def auth(org: Org) -> dict[str, str]:
    """The headers that make a call as the org's owner key."""
    return {"Authorization": f"Bearer {org.key}"}


@asynccontextmanager
async def gateway(backend: str, data_dir: Path, upstream: Upstream) -> AsyncIterator[Gateway]:
    """The gateway in process on a fresh database of `backend`, every provider pointed at `upstream`."""
    url, pg_name = await fresh_database(backend, data_dir)
    env = {"ALUMIA_DATABASE_URL": url, "ALUMIA_DATA_DIR": str(data_dir), "ALUMIA_HOLD_SWEEP_SECONDS": "3600"}
    for provider in PROVIDER_NAMES:
        env[f"ALUMIA_BASE_URL_{provider.upper()}"] = f"{upstream.base_url}/{provider}"
        env[f"ALUMIA_PLATFORM_KEY_{provider.upper()}"] = "sk-test-" + secrets.token_hex(20)
    settings = Settings.from_env(env)
    await asyncio.to_thread(upgrade, url)
    keep = _Keep()
    root = logging.getLogger()
    level = root.level
    root.addHandler(keep)
    root.setLevel(logging.DEBUG)
    app = create_app(settings)
    db = Database(url)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test",
                                         timeout=30) as client:
                yield Gateway(client=client, settings=settings, db=db, log=keep)
    finally:
        root.removeHandler(keep)
        root.setLevel(level)
        await db.dispose()
        if pg_name:
            await drop_pg_database(pg_name)

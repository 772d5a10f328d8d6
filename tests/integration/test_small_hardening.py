"""Over real HTTP: what the server logs at DEBUG, file modes, headers, redirects,
agent slugs, test keys in production and meter quantities."""

import base64
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from alumia.config import Settings
from alumia.services import accounts
from alumia.sim.env import sim_env
from alumia.sim.server import SimServer
from alumia.storage.tables import byok_keys, sessions, users
from alumia.web.headers import CONTENT_SECURITY_POLICY

from harness import Org, Server, error, fake_key, new_org_with_login


async def sign_in(server: Server, email: str, password: str) -> httpx.AsyncClient:
    """A browser-like client signed in to the dashboard (the caller closes it)."""
    client = httpx.AsyncClient(base_url=server.base_url, timeout=30, headers={"Origin": server.base_url})
    form = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    done = await client.post("/login", data={"csrf_token": token.group(1), "email": email,
                                             "password": password})
    assert done.status_code == 303, done.text
    return client


async def test_debug_logs_hold_no_password_hash_csrf_token_session_or_ciphertext(server: Server) -> None:
    org, password = await new_org_with_login(server)
    async with server.api(org.key) as api:
        added = await api.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": fake_key()})
        assert added.status_code == 201, added.text
    client = await sign_in(server, org.owner_email, password)
    try:
        page = await client.get(f"/{org.slug}/billing")
        assert page.status_code == 200
        session_cookie = next(v for k, v in client.cookies.items() if "session" in k)
    finally:
        await client.aclose()
    async with server.db.read() as conn:
        password_hash = (await conn.execute(select(users.c.password_hash).where(
            users.c.email == org.owner_email))).scalar_one()
        csrf_tokens = (await conn.execute(select(sessions.c.csrf_token, sessions.c.id_hash))).all()
        ciphertext = (await conn.execute(select(byok_keys.c.ciphertext).where(
            byok_keys.c.id == added.json()["data"]["id"]))).scalar_one()
    secrets = {"password hash": password_hash, "session cookie": session_cookie,
               "ciphertext (hex)": ciphertext.hex()[:64],
               "ciphertext (base64)": base64.b64encode(ciphertext).decode()[:64],
               "ciphertext (bytes)": repr(ciphertext)[2:66]}
    for token, id_hash in csrf_tokens:
        secrets[f"csrf token {token[:6]}"] = token
        secrets[f"session id hash {id_hash[:6]}"] = id_hash
    log = server.log_text()
    assert server.env["ALUMIA_LOG_LEVEL"] == "DEBUG"
    leaked = [name for name, value in secrets.items() if value in log]
    assert leaked == []


def sqlite_modes(data_dir: Path) -> dict[str, int]:
    """The permission bits of the database file and its WAL and shared-memory files."""
    return {p.name: p.stat().st_mode & 0o777 for p in data_dir.glob("alumia.db*")}


def world_readable(data_dir: Path) -> None:
    for path in data_dir.glob("alumia.db*"):
        path.chmod(0o644)


async def test_the_sqlite_file_and_its_wal_are_private_to_the_owner(tmp_path: Path, sim: SimServer) -> None:
    srv = Server(database_url=f"sqlite+aiosqlite:///{tmp_path / 'alumia.db'}", data_dir=tmp_path,
                 sim_env=sim_env(sim.host, sim.port), label="modes")
    try:
        srv.start()
        await srv.new_org()  # a write: the server's connections have the WAL open
        assert sqlite_modes(tmp_path) == {"alumia.db": 0o600, "alumia.db-wal": 0o600, "alumia.db-shm": 0o600}
    finally:
        srv.stop()
        await srv.db.dispose()
    # Files an older version left readable by everyone are narrowed on the next upgrade and start.
    world_readable(tmp_path)
    again = Server(database_url=srv.env["ALUMIA_DATABASE_URL"], data_dir=tmp_path, sim_env=srv.env,
                   label="modes-again")
    try:
        again.start()
        assert set(sqlite_modes(tmp_path).values()) == {0o600}
    finally:
        again.stop()
        await again.db.dispose()


SECURITY_HEADERS = {"content-security-policy": CONTENT_SECURITY_POLICY, "x-frame-options": "DENY",
                    "x-content-type-options": "nosniff"}


async def test_every_page_and_api_answer_carries_the_security_headers(server: Server) -> None:
    org, password = await new_org_with_login(server)
    client = await sign_in(server, org.owner_email, password)
    try:
        answers = [await client.get(path) for path in (
            "/login", f"/{org.slug}/billing", f"/{org.slug}/lab", f"/{org.slug}/agents", "/no-such-page",
            "/static/style.css", "/static/pages.js")]
    finally:
        await client.aclose()
    async with server.api(org.key) as api:
        answers += [await api.get("/api/v1/billing"), await api.get("/v1/models"),
                    await api.post("/v1/chat/completions", json={"model": "gpt-5.6-luna", "messages": [
                        {"role": "user", "content": "hi"}]})]
    async with server.api(None) as anonymous:
        answers += [await anonymous.get("/api/v1/billing"), await anonymous.post("/v1/chat/completions")]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 404, 200, 200, 200, 200, 200, 401, 401]
    for answer in answers:
        assert {name: answer.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS, answer.url


async def test_a_trailing_slash_redirects_relatively_whatever_the_host_header(server: Server) -> None:
    org, password = await new_org_with_login(server)
    client = await sign_in(server, org.owner_email, password)
    try:
        forged = {"Host": "attacker.example"}
        billing = await client.get(f"/{org.slug}/billing/", headers=forged)
        assert billing.status_code == 307 and billing.headers["location"] == f"/{org.slug}/billing"
        paged = await client.get(f"/{org.slug}/billing//?cursor=abc", headers=forged)
        assert paged.status_code == 307 and paged.headers["location"] == f"/{org.slug}/billing?cursor=abc"
        assert (await client.get(f"/{org.slug}/billing/", follow_redirects=True)).status_code == 200
        # Never to another site, and nothing that is not a route.
        for raw_path in (b"//attacker.example/", b"//attacker.example//", f"/{org.slug}/nothing/".encode()):
            request = client.build_request("GET", "/", headers=forged)
            request.url = request.url.copy_with(raw_path=raw_path)
            answer = await client.send(request)
            assert answer.status_code == 404 and "location" not in answer.headers, raw_path
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
async def production(sim: SimServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A server with ALUMIA_ENV=production on SQLite."""
    data_dir = tmp_path_factory.mktemp("alumia-production")
    master = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = {**sim_env(sim.host, sim.port), "ALUMIA_ENV": "production", "ALUMIA_MASTER_KEYS": f"1:{master}"}
    srv = Server(database_url=f"sqlite+aiosqlite:///{data_dir / 'alumia.db'}", data_dir=data_dir,
                 sim_env=env, label="production")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        await srv.db.dispose()


async def make_test_key(srv: Server, org: Org) -> str:
    """An alm_test_ key of the org, as a development set-up on the same database would make it."""
    development = Settings.from_env({**srv.env, "ALUMIA_ENV": "development"})
    made = await accounts.create_api_key_for(srv.db, development, org_slug=org.slug, user_email=None)
    assert made["key"].startswith("alm_test_")
    return made["key"]


TEST_KEY_REFUSED = ("alm_test_ keys do not work in production; create an alm_live_ key "
                    "(`alumia apikey create` on the production server, or the dashboard)")


async def test_alm_test_keys_are_refused_by_the_management_api_in_production(production: Server) -> None:
    org = await production.new_org()
    assert org.key.startswith("alm_live_")
    key = await make_test_key(production, org)
    async with production.api(org.key) as live, production.api(key) as test:
        assert (await live.get("/api/v1/billing")).status_code == 200
        assert error(await test.get("/api/v1/billing"), 401, "UNAUTHORIZED") == TEST_KEY_REFUSED
        models = await test.get("/v1/models")
        assert models.status_code == 401 and models.json()["error"]["message"] == TEST_KEY_REFUSED
        assert (await live.get("/v1/models")).status_code == 200


async def test_alm_test_keys_cannot_call_models_in_production(production: Server, sim: SimServer) -> None:
    org = await production.new_org()
    key = await make_test_key(production, org)
    calls = len(sim.calls())
    async with production.api(key) as test:
        answer = await test.post("/v1/chat/completions", json={"model": "gpt-5.6-luna", "messages": [
            {"role": "user", "content": "hi"}]})
    assert answer.status_code == 401 and answer.json()["error"]["message"] == TEST_KEY_REFUSED
    assert len(sim.calls()) == calls

"""Adding a BYOK key asks the provider first: verified, rejected (nothing stored), restricted, unverified."""

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from alumia.domain.catalog import PROVIDER_NAMES
from alumia.sim.env import sim_env
from alumia.sim.server import SimServer

from harness import Server, refusing_port

KEYS = "/api/v1/billing/byok-keys"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
async def test_each_provider_verifies_a_good_key_and_refuses_a_bad_one(
        server: Server, sim: SimServer, provider: str) -> None:
    org = await server.new_org()
    good = f"test-{provider}-" + secrets.token_hex(16)
    bad = f"test-{provider}-invalid-" + secrets.token_hex(16)
    async with server.api(org.key) as api:
        added = await api.post(KEYS, json={"provider": provider, "apiKey": good})
        assert added.status_code == 201, added.text
        key = added.json()["data"]
        assert key["verification"] == "verified" and key["lastVerifiedAt"] is not None
        assert "warning" not in key
        check = sim.calls()[-1]
        assert check["provider"] == provider and check["keySha256"] == sha(good)
        assert check["path"].endswith("/chat/completions" if provider == "nvidia" else "/models")

        refused = await api.post(KEYS, json={"provider": provider, "apiKey": bad})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "BYOK_KEY_REJECTED"
        assert error["message"].startswith(f"{provider} rejected this API key")
        assert "Nothing was stored" in error["message"] and bad not in refused.text
        listed = (await api.get(KEYS)).json()["data"]["items"]
    assert [k["id"] for k in listed] == [key["id"]] and listed[0]["status"] == "active"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_restricted_key_is_stored_with_a_warning(server: Server, provider: str) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        added = await api.post(KEYS, json={"provider": provider,
                                           "apiKey": "test-restricted-" + secrets.token_hex(16)})
    assert added.status_code == 201, added.text
    key = added.json()["data"]
    assert key["verification"] == "restricted" and key["status"] == "active"
    assert "refused it access (HTTP 403)" in key["warning"]


@pytest.fixture
def unreachable_server(tmp_path: Path, sim: SimServer) -> Iterator[Server]:
    closed = refusing_port()
    port = closed.getsockname()[1]
    env = {**sim_env(sim.host, sim.port), "ALUMIA_BASE_URL_OPENAI": f"http://127.0.0.1:{port}/v1",
           "ALUMIA_KEY_CHECK_TIMEOUT_SECONDS": "2"}
    srv = Server(database_url=f"sqlite+aiosqlite:///{tmp_path / 'alumia.db'}", data_dir=tmp_path,
                 sim_env=env, label="unreachable")
    srv.start()
    yield srv
    srv.stop()
    closed.close()


async def test_an_unreachable_provider_stores_the_key_unverified(unreachable_server: Server) -> None:
    org = await unreachable_server.new_org()
    async with unreachable_server.api(org.key) as api:
        added = await api.post(KEYS, json={"provider": "openai",
                                           "apiKey": "sk-test-" + secrets.token_hex(16)})
    assert added.status_code == 201, added.text
    key = added.json()["data"]
    assert key["verification"] == "unverified" and key["lastVerifiedAt"] is None
    assert "could not be asked" in key["warning"]
    await unreachable_server.db.dispose()

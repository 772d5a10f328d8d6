"""Stored keys across restarts: key file, rotation, fail-closed start-up, ciphertexts bound to their row."""

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from alumia.sim.env import sim_env
from alumia.sim.server import SimServer
from alumia.storage.tables import byok_keys

from harness import Server, fake_key, run_cli

HELLO = [{"role": "user", "content": "hello"}]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def make_server(data_dir: Path, sim: SimServer) -> Iterator:
    started: list[Server] = []

    def make(extra_env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Server:
        env = {k: v for k, v in sim_env(sim.host, sim.port).items() if k not in drop}
        srv = Server(database_url=f"sqlite+aiosqlite:///{data_dir / 'alumia.db'}", data_dir=data_dir,
                     sim_env={**env, **(extra_env or {})}, label=f"v{len(started)}")
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def chat(srv: Server, key: str, model: str = "gpt-5.6-luna") -> httpx.Response:
    return httpx.post(f"{srv.base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": HELLO}, timeout=30)


def start_fails(srv: Server) -> str:
    """Run `alumia serve` expecting it to refuse to start; returns what it printed."""
    assert run_cli(srv.env, "db", "upgrade").returncode == 0
    done = subprocess.run(srv.serve_args(), env=srv.env, capture_output=True, text=True, timeout=60,
                          check=False, pass_fds=[srv.socket.fileno()])
    assert done.returncode != 0
    return done.stdout + done.stderr


async def test_key_file_rotation_and_restart_keep_keys_usable(make_server, data_dir: Path,
                                                            sim: SimServer) -> None:
    first = make_server()
    first.start()
    key_file = data_dir / "master.keys"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "generated a new key-encryption key" in first.log_text()
    org = await first.new_org()
    byok_key = fake_key()
    async with first.api(org.key) as api:
        assert (await api.post("/api/v1/billing/byok-keys",
                               json={"provider": "openai", "apiKey": byok_key})).status_code == 201
    first.stop()

    rotated = run_cli(first.env, "vault", "rotate", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {"primaryVersion": 2, "addedVersion": True, "rewrapped": 1}
    async with first.db.read() as conn:
        versions = [r.kek_version for r in await conn.execute(select(byok_keys.c.kek_version))]
    assert versions == [2]
    again = json.loads(run_cli(first.env, "vault", "rotate", "--json").stdout)
    assert again["rewrapped"] == 1 and again["primaryVersion"] == 3

    second = make_server()
    second.start()
    response = chat(second, org.key)
    assert response.status_code == 200 and response.headers["x-alumia-route"] == "byok"
    assert sim.calls()[-1]["keySha256"] == sha(byok_key)
    await first.db.dispose()


async def test_start_up_fails_closed_without_the_right_keys(make_server, data_dir: Path) -> None:
    first = make_server()
    first.start()
    org = await first.new_org()
    async with first.api(org.key) as api:
        assert (await api.post("/api/v1/billing/byok-keys",
                               json={"provider": "openai", "apiKey": fake_key()})).status_code == 201
    first.stop()
    await first.db.dispose()

    production = make_server({"ALUMIA_ENV": "production"})
    assert "ALUMIA_MASTER_KEYS is required" in start_fails(production)

    wrong = base64.urlsafe_b64encode(os.urandom(32)).decode()
    wrong_key = make_server({"ALUMIA_MASTER_KEYS": f"1:{wrong}"})
    assert "version 1 is wrong" in start_fails(wrong_key)

    (data_dir / "master.keys").rename(data_dir / "master.keys.bak")
    missing = make_server()
    output = start_fails(missing)
    assert "master.keys" in output
    assert not (data_dir / "master.keys").exists()  # no silent new key over existing ciphertexts


async def test_a_ciphertext_moved_to_another_org_is_unusable(make_server, sim: SimServer) -> None:
    srv = make_server()
    srv.start()
    victim, attacker = await srv.new_org(), await srv.new_org()
    victim_key, attacker_key = fake_key("sk-victim-"), fake_key("sk-attacker-")
    ids = {}
    for org, key in ((victim, victim_key), (attacker, attacker_key)):
        async with srv.api(org.key) as api:
            response = await api.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": key})
            ids[org.slug] = response.json()["data"]["id"]
    # A restart empties the plaintext cache, so the next call must decrypt what is in the row now.
    srv.stop()
    async with srv.db.write() as conn:
        stolen = (await conn.execute(select(byok_keys.c.ciphertext).where(
            byok_keys.c.id == ids[victim.slug]))).scalar_one()
        await conn.execute(update(byok_keys).where(byok_keys.c.id == ids[attacker.slug])
                           .values(ciphertext=stolen))
    await srv.db.dispose()
    restarted = make_server()
    restarted.start()
    calls_before = len(sim.calls())
    response = chat(restarted, attacker.key)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "BYOK_KEY_UNAVAILABLE"
    assert f"/{attacker.slug}/billing" in error["message"]
    assert len(sim.calls()) == calls_before  # neither org's key was sent anywhere
    assert victim_key not in response.text


async def test_no_platform_key_for_a_paid_provider_answers_503_and_suggests_byok(
        make_server, sim: SimServer) -> None:
    srv = make_server(drop=("ALUMIA_PLATFORM_KEY_OPENAI",))
    srv.start()
    org = await srv.new_org()
    response = chat(srv, org.key)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert "no platform key is configured for openai" in error["message"]
    assert f"/{org.slug}/billing" in error["message"]
    async with srv.api(org.key) as api:
        assert (await api.post("/api/v1/billing/byok-keys",
                               json={"provider": "openai", "apiKey": fake_key()})).status_code == 201
    assert chat(srv, org.key).headers["x-alumia-route"] == "byok"
    await srv.db.dispose()



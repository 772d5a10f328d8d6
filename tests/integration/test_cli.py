"""The `alumia` command: what it creates and prints, and `alumia demo` as `make run` starts it."""

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from argon2 import PasswordHasher

from alumia.config import Settings
from alumia.errors import AppError
from alumia.services import accounts
from alumia.storage.db import Database

from harness import ALUMIA, Server, listening_socket, refusing_port, run_cli


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "ALUMIA_DATA_DIR": str(tmp_path)}
    env.pop("ALUMIA_DATABASE_URL", None)
    assert run_cli(env, "db", "upgrade").returncode == 0
    return env


def cli_json(env: dict[str, str], *args: str) -> dict:
    done = run_cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_org_user_apikey_and_deposit_commands(env: dict[str, str]) -> None:
    org = cli_json(env, "org", "create", "--slug", "acme", "--owner-email", "Owner@Acme.test")
    assert org["slug"] == "acme" and org["owner"]["email"] == "owner@acme.test"
    assert len(org["password"]) >= 16

    duplicate = run_cli(env, "org", "create", "--slug", "acme", "--owner-email", "x@acme.test")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    bad_slug = run_cli(env, "org", "create", "--slug", "Not A Slug", "--owner-email", "x@acme.test")
    assert bad_slug.returncode == 1 and "slug must be" in bad_slug.stderr

    member = cli_json(env, "user", "create", "--org", "acme", "--email", "m@acme.test", "--role", "member")
    assert member["role"] == "member" and member["password"]
    bad_role = run_cli(env, "user", "create", "--org", "acme", "--email", "z@acme.test", "--role", "god")
    assert bad_role.returncode == 1 and "role must be one of" in bad_role.stderr

    key = cli_json(env, "apikey", "create", "--org", "acme")
    assert re.fullmatch(r"alm_test_[0-9a-f]{48}", key["key"])
    assert key["prefix"] == key["key"][:12] and key["user"] == "owner@acme.test"
    member_key = cli_json(env, "apikey", "create", "--org", "acme", "--user", "m@acme.test")
    assert member_key["user"] == "m@acme.test"

    deposit = cli_json(env, "billing", "deposit", "--org", "acme", "--cents", "2500")
    # $10.00 early-bird credit + $25.00
    assert deposit["balanceMicrocents"] == 35_000_000 and deposit["balanceCents"] == 3_500

    production = run_cli({**env, "ALUMIA_ENV": "production"}, "billing", "deposit", "--org", "acme",
                         "--cents", "100")
    assert production.returncode == 1 and "not available here" in production.stderr
    with_stripe = run_cli({**env, "ALUMIA_STRIPE_SECRET_KEY": "sk_test_" + "0" * 24}, "billing", "deposit",
                          "--org", "acme", "--cents", "100")
    assert with_stripe.returncode == 1 and "go through Stripe Checkout" in with_stripe.stderr


def cli_list(env: dict[str, str], *args: str) -> list:
    done = run_cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_db_upgrade_says_whether_it_created_the_schema_and_db_current_reads_it(tmp_path: Path) -> None:
    env = {**os.environ, "ALUMIA_DATA_DIR": str(tmp_path / "data")}
    env.pop("ALUMIA_DATABASE_URL", None)
    before = run_cli(env, "db", "current")
    assert before.returncode == 0 and before.stdout.startswith("no schema yet"), before.stderr
    assert not (tmp_path / "data").exists()  # looking does not create the database
    created = run_cli(env, "db", "upgrade")
    assert created.returncode == 0, created.stderr
    head = cli_json(env, "db", "current")["head"]
    assert created.stdout.strip() == f"created the schema at revision {head[0]}"
    assert run_cli(env, "db", "upgrade").stdout.strip() == f"already at revision {head[0]}: nothing to do"
    assert cli_json(env, "db", "upgrade") == {"action": "unchanged", "before": head, "after": head}
    assert cli_json(env, "db", "current") == {"current": head, "head": head, "upToDate": True}
    assert run_cli(env, "db", "current").stdout.strip() == f"revision {head[0]} (up to date)"


async def who_is(env: dict[str, str], key: str) -> str | None:
    """The org slug an API key speaks for, None when it is refused."""
    database = Database(Settings.from_env(env).resolved_database_url)
    try:
        return (await accounts.authenticate(database, key, production=False)).org_slug
    except AppError:
        return None
    finally:
        await database.dispose()


def test_operator_lists_orgs_and_keys_revokes_keys_and_resets_passwords(env: dict[str, str],
                                                                       tmp_path: Path) -> None:
    assert cli_list(env, "org", "list") == []
    org = cli_json(env, "org", "create", "--slug", "acme", "--owner-email", "owner@acme.test")
    cli_json(env, "org", "create", "--slug", "beta", "--owner-email", "owner@beta.test")
    cli_json(env, "user", "create", "--org", "acme", "--email", "m@acme.test")
    orgs = cli_list(env, "org", "list")
    assert [(o["slug"], o["members"], o["balanceMicrocents"]) for o in orgs] == [
        ("acme", 2, 10_000_000), ("beta", 1, 10_000_000)]
    assert orgs[0]["id"] == org["id"]

    owner_key = cli_json(env, "apikey", "create", "--org", "acme", "--name", "ci")
    member_key = cli_json(env, "apikey", "create", "--org", "acme", "--user", "m@acme.test")
    cli_json(env, "apikey", "create", "--org", "beta")
    listed = cli_list(env, "apikey", "list", "--org", "acme")
    assert {k["id"] for k in listed} == {owner_key["id"], member_key["id"]}
    assert {k["user"] for k in listed} == {"owner@acme.test", "m@acme.test"}
    human = run_cli(env, "apikey", "list", "--org", "acme").stdout
    for printed in (json.dumps(listed), human):  # the list never carries a key, only its prefix
        assert owner_key["key"] not in printed and member_key["key"] not in printed
        assert owner_key["prefix"] in printed

    revoked = cli_json(env, "apikey", "revoke", owner_key["id"])
    assert revoked["revokedAt"] and revoked["alreadyRevoked"] is False and "key" not in revoked
    assert cli_json(env, "apikey", "revoke", owner_key["id"])["alreadyRevoked"] is True
    assert [k["id"] for k in cli_list(env, "apikey", "list", "--org", "acme")] == [member_key["id"]]
    everything = cli_list(env, "apikey", "list", "--org", "acme", "--all")
    assert {k["id"]: bool(k["revokedAt"]) for k in everything} == {owner_key["id"]: True,
                                                                    member_key["id"]: False}
    # The revoked key no longer speaks for anyone; the member's still does.
    assert asyncio.run(who_is(env, owner_key["key"])) is None
    assert asyncio.run(who_is(env, member_key["key"])) == "acme"
    missing = run_cli(env, "apikey", "revoke", "no-such-id")
    assert missing.returncode == 1 and "no API key" in missing.stderr
    assert run_cli(env, "apikey", "list", "--org", "nope").returncode == 1

    reset = cli_json(env, "user", "reset-password", "--org", "acme", "--email", "M@acme.test")
    assert reset["email"] == "m@acme.test" and len(reset["password"]) >= 16
    with sqlite3.connect(tmp_path / "alumia.db") as conn:
        (stored,) = conn.execute("SELECT password_hash FROM users WHERE email = 'm@acme.test'").fetchone()
    assert PasswordHasher().verify(stored, reset["password"])
    stranger = run_cli(env, "user", "reset-password", "--org", "beta", "--email", "m@acme.test")
    assert stranger.returncode == 1 and "no member m@acme.test in beta" in stranger.stderr


def test_sim_print_env_points_every_provider_at_the_simulator() -> None:
    done = subprocess.run([ALUMIA, "sim", "--port", "9555", "--print-env"], capture_output=True, text=True,
                          timeout=30, check=True)
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines())
    urls = {k: v for k, v in lines.items() if k.startswith("ALUMIA_BASE_URL_")}
    keys = {k: v for k, v in lines.items() if k.startswith("ALUMIA_PLATFORM_KEY_")}
    assert len(urls) == 14 and len(keys) == 14
    assert urls["ALUMIA_BASE_URL_GROQ"] == "http://127.0.0.1:9555/groq/openai/v1"
    assert all(v.startswith("http://127.0.0.1:9555/") for v in urls.values())


@contextmanager
def running_demo(env: dict[str, str]) -> Iterator[tuple[int, str]]:
    """`alumia demo` on a socket of ours: its port and what it printed up to the banner's last address."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    process = subprocess.Popen([ALUMIA, "demo", "--fd", str(sock.fileno())], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               pass_fds=[sock.fileno()])
    sock.close()  # the demo holds it now
    try:
        printed = ""
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while "  providers " not in printed and time.monotonic() < deadline and process.poll() is None:
            printed += process.stdout.readline()
        yield port, printed
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def test_demo_serves_the_seeded_org_with_the_simulator(tmp_path: Path) -> None:
    env = {**os.environ, "ALUMIA_DATA_DIR": str(tmp_path)}
    env.pop("ALUMIA_DATABASE_URL", None)
    assert run_cli(env, "db", "upgrade").returncode == 0
    with running_demo(env) as (port, printed):
        base = f"http://127.0.0.1:{port}"
        # The banner leads with where a person starts: the sign-in page and the org's billing page.
        banner = printed[printed.index("Alumia demo"):].splitlines()
        assert banner[0] == f"Alumia demo is ready: sign in at {base}/login", printed
        assert banner[1].startswith(f"  sign in    {base}/login") and f"{base}/demo/billing" in banner[2]
        key = re.search(r"API key\s+(alm_test_[0-9a-f]{48})", printed)
        assert key, printed
        assert re.search(r"owner login owner@demo\.alumia\.local / \S+\)", printed)
        # Printed once it answers: no waiting here.
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key.group(1), max_retries=0)
        answer = client.chat.completions.create(model="gpt-5.6-luna",
                                                messages=[{"role": "user", "content": "Hello"}])
        assert answer.choices[0].message.content.startswith("Simulated reply from openai/gpt-5.6-luna")


def demo_login(printed: str) -> tuple[str, str]:
    """The owner password and API key a demo banner shows."""
    password = re.search(r"owner login owner@demo\.alumia\.local / (\S+)\)", printed)
    key = re.search(r"API key\s+(alm_test_[0-9a-f]{48})", printed)
    assert password and key, printed
    return password.group(1), key.group(1)


def test_demo_keeps_its_login_and_key_across_restarts(tmp_path: Path) -> None:
    env = {**os.environ, "ALUMIA_DATA_DIR": str(tmp_path)}
    env.pop("ALUMIA_DATABASE_URL", None)
    with running_demo(env) as (_, printed):
        first = demo_login(printed)
        assert "login and key are new" in printed
    saved = tmp_path / "demo-login.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    with running_demo(env) as (port, printed):
        assert demo_login(printed) == first and "kept from the last start" in printed
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            billing = client.get("/api/v1/billing", headers={"Authorization": f"Bearer {first[1]}"})
            assert billing.status_code == 200
    # Only one demo key was ever made.
    assert [k["name"] for k in cli_list(env, "apikey", "list", "--org", "demo")] == ["demo"]
    # A key revoked by the operator is replaced at the next start; the password that still works stays.
    assert cli_json(env, "apikey", "revoke", cli_list(env, "apikey", "list", "--org", "demo")[0]["id"])
    with running_demo(env) as (_, printed):
        password, key = demo_login(printed)
        assert password == first[0] and key != first[1]
    assert json.loads(saved.read_text())["apiKey"] == key


def wait_healthy(process: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError("the server did not become healthy")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_on_the_listening_socket_it_inherits(env: dict[str, str], tmp_path: Path,
                                                          workers: int) -> None:
    sock = listening_socket()
    port = sock.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([ALUMIA, "serve", "--fd", str(sock.fileno()), "--workers", str(workers)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()])
    sock.close()  # the server holds the only listening socket on the port now
    try:
        wait_healthy(process, port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert all(client.get("/healthz").json() == {"status": "ok"} for _ in range(20))
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_harness_server_serves_on_the_socket_the_harness_holds(tmp_path: Path) -> None:
    srv = Server(database_url=f"sqlite+aiosqlite:///{tmp_path / 'alumia.db'}", data_dir=tmp_path, sim_env={},
                 label="fd")
    try:
        assert "--fd" in srv.serve_args() and srv.port == srv.socket.getsockname()[1]
        srv.start()
        # The harness still holds its listening socket, so no process could have bound this port itself.
        assert httpx.get(f"{srv.base_url}/healthz", timeout=10).status_code == 200
    finally:
        srv.stop()
    assert srv.socket.fileno() == -1


def refused_start(env: dict[str, str], *args: str) -> str:
    """Run `alumia <args>` expecting it to refuse to start: exit status 1 and one line on stderr."""
    done = subprocess.run([ALUMIA, *args], env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_serve_and_demo_refuse_a_misconfigured_start_with_one_line(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALUMIA_")}
    fresh = {**base, "ALUMIA_DATA_DIR": str(tmp_path)}
    assert refused_start(fresh, "serve", "--port", "0") == (
        f"error: the database sqlite+aiosqlite:///{tmp_path}/alumia.db is not migrated to this version: "
        "run `alumia db upgrade`")
    missing = {**base, "ALUMIA_DATA_DIR": str(tmp_path / "nowhere")}
    assert refused_start(missing, "serve", "--port", "0") == (
        f"error: the data directory {tmp_path}/nowhere does not exist: run `alumia db upgrade` "
        "(it creates it and the database), or set ALUMIA_DATA_DIR")
    password = "pw" + os.urandom(6).hex()
    postgres = {**fresh, "ALUMIA_DATABASE_URL": f"postgres://alumia:{password}@127.0.0.1:5432/alumia"}
    wrong_scheme = ("error: ALUMIA_DATABASE_URL must use sqlite+aiosqlite:// or postgresql+asyncpg:// (for a "
                    "postgres:// or postgresql:// URL, write postgresql+asyncpg://)")
    assert refused_start(postgres, "serve", "--port", "0") == wrong_scheme
    assert refused_start(postgres, "demo", "--port", "0") == wrong_scheme
    with refusing_port() as closed:  # bound, never listening: connections are refused
        url = f"postgresql+asyncpg://alumia:{password}@127.0.0.1:{closed.getsockname()[1]}/alumia"
        unreachable = refused_start({**fresh, "ALUMIA_DATABASE_URL": url}, "serve", "--port", "0")
    assert unreachable.startswith("error: cannot open the database postgresql+asyncpg://alumia:***@127.0.0.1:")
    assert unreachable.endswith("check ALUMIA_DATABASE_URL and that the database is running")
    assert password not in unreachable
    assert run_cli(fresh, "db", "upgrade").returncode == 0
    production = {**fresh, "ALUMIA_ENV": "production"}
    assert refused_start(production, "serve", "--port", "0") == (
        "error: ALUMIA_MASTER_KEYS is required when ALUMIA_ENV=production")
    assert refused_start(production, "demo", "--port", "0") == (
        "error: ALUMIA_MASTER_KEYS is required when ALUMIA_ENV=production")


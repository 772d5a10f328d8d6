"""A real Alumia server process over a real database, and the simulator, for integration tests."""

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import asyncpg
import httpx
import pytest

from alumia.config import Settings
from alumia.services import accounts
from alumia.storage.db import Database

ALUMIA = str(Path(sys.executable).with_name("alumia"))
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def listening_socket() -> socket.socket:
    """A socket listening on 127.0.0.1 on a port the kernel picked; a server process inherits it (`--fd`),
    so no other process can take the port between choosing and serving it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def refusing_port() -> socket.socket:
    """A socket bound to 127.0.0.1 that never listens: connecting to its port is refused for as long as
    it stays open (an unreachable upstream)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def create_pg_database() -> str | None:
    """A fresh PostgreSQL database for one test session; None when PostgreSQL is not reachable."""
    name = "alumia_test_" + secrets.token_hex(6)
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    """Drop a test database, ending its connections first."""
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `alumia` command with the server's environment."""
    return subprocess.run([ALUMIA, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Org:
    """A test org: its slug and id, its owner's API key, and a client for the server."""

    slug: str
    id: str
    owner_email: str
    key: str


class Server:
    """`alumia serve` in a subprocess, logging at DEBUG to a file.

    The harness holds the listening socket for the server's whole life and each process it starts
    serves on it (`alumia serve --fd`): the port cannot collide, and a restarted process gets the same one.
    """

    def __init__(self, *, database_url: str, data_dir: Path, sim_env: dict[str, str], label: str) -> None:
        self.socket = listening_socket()
        self.port = self.socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{label}.log"
        # Tests sweep holds themselves, when they mean to; a test's own env may say otherwise.
        self.env = {**os.environ, "ALUMIA_LOG_LEVEL": "DEBUG", "ALUMIA_HOLD_SWEEP_SECONDS": "3600",
                    **sim_env, "ALUMIA_DATABASE_URL": database_url, "ALUMIA_DATA_DIR": str(data_dir)}
        self.settings = Settings.from_env(self.env)
        self.db = Database(database_url)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Migrate, start, and wait for /healthz."""
        migrated = run_cli(self.env, "db", "upgrade")
        assert migrated.returncode == 0, migrated.stderr
        with self.log_path.open("wb") as log:
            self._process = self.spawn(log)
        self.wait_healthy()

    def serve_args(self) -> list[str]:
        """The command line of a server process on the harness's socket."""
        return [ALUMIA, "serve", "--fd", str(self.socket.fileno())]

    def spawn(self, log: BinaryIO) -> "subprocess.Popen[bytes]":
        """A server process on the harness's socket, writing its output to `log`."""
        return subprocess.Popen(self.serve_args(), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=[self.socket.fileno()])

    def wait_healthy(self) -> None:
        """Wait until the current process answers /healthz (30 s at most)."""
        assert self._process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self._process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the server did not become healthy:\n" + self.log_path.read_text())

    def stop(self) -> None:
        """Stop the process and wait for it, then close the listening socket."""
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=15)
        self.socket.close()

    @property
    def pid(self) -> int:
        """The server process's id (for reading its memory in /proc)."""
        assert self._process is not None
        return self._process.pid

    def log_text(self) -> str:
        """Everything the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    async def new_org(self, *, deposit_cents: int = 0) -> Org:
        """A new org with its owner's API key (made through the services, straight on the database)."""
        org, _password = await new_org_with_login(self, deposit_cents=deposit_cents)
        return org

    async def member_key(self, org: Org, role: str) -> str:
        """An API key of a new user with `role` in the org."""
        email = f"{role}-{secrets.token_hex(4)}@{org.slug}.test"
        await accounts.create_user(self.db, org_slug=org.slug, email=email, role=role)
        key = await accounts.create_api_key_for(self.db, self.settings, org_slug=org.slug, user_email=email)
        return key["key"]

    def api(self, key: str | None) -> httpx.AsyncClient:
        """An HTTP client for the server, authenticated with `key`."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)

    def platform_key(self, provider: str) -> str:
        """The platform key the server was given for a provider."""
        return self.env[f"ALUMIA_PLATFORM_KEY_{provider.upper()}"]


def fake_key(prefix: str = "sk-test-") -> str:
    """An obviously fake provider key, made at run time."""
    return prefix + secrets.token_hex(20)



async def new_org_with_login(server: Server, *, deposit_cents: int = 0) -> tuple[Org, str]:
    """A new org and its owner's one-time password, for signing in through the dashboard."""
    slug = "org-" + secrets.token_hex(5)
    email = f"owner@{slug}.test"
    created = await accounts.create_org(server.db, server.settings, slug=slug, owner_email=email)
    key = await accounts.create_api_key_for(server.db, server.settings, org_slug=slug, user_email=None)
    org = Org(slug=slug, id=created["id"], owner_email=email, key=key["key"])
    if deposit_cents:
        async with server.api(org.key) as api:
            response = await api.post("/api/v1/billing/deposit", json={"amountCents": deposit_cents})
            assert response.status_code == 201, response.text
    return org, created["password"]


async def fresh_database(backend: str, data_dir: Path) -> tuple[str, str | None]:
    """The URL of a new database of `backend` (sqlite or postgres), and the PostgreSQL name to drop after.

    Without PostgreSQL the test is skipped, except under CI=true, where it fails.
    """
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{data_dir / 'alumia.db'}", None
    pg_name = await create_pg_database()
    if pg_name is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 and CI=true")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_name}", pg_name


@asynccontextmanager
async def running_server(backend: str, data_dir: Path, env: dict[str, str],
                         label: str) -> AsyncIterator[Server]:
    """`alumia serve` on a fresh database of `backend` (sqlite or postgres), stopped and dropped after.

    Without PostgreSQL the test is skipped, except under CI=true, where it fails.
    """
    url, pg_name = await fresh_database(backend, data_dir)
    srv = Server(database_url=url, data_dir=data_dir, sim_env=env, label=label)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        await srv.db.dispose()
        if pg_name:
            await drop_pg_database(pg_name)


def data(response: httpx.Response, status: int = 200) -> dict:
    """The `data` of a success envelope, after checking the status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


def error(response: httpx.Response, status: int, code: str) -> str:
    """The message of an error envelope, after checking the status and the code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    return body["error"]["message"]

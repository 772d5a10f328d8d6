"""`alumia demo`: the embedded default, the simulator as every provider, and a seeded org to try.

The demo's owner password and API key are kept across restarts in `<data dir>/demo-login.json` (mode
0600, beside the generated key-encryption keys and the SQLite file, which are as secret): a restart
prints the same login and key, so a browser session, a shell's `$KEY` or an SDK script keeps working.
Delete the file for a new password and key; one that no longer works (a revoked key, a password
changed with `alumia user reset-password`) is replaced at the next start.
"""

import asyncio
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import DBAPIError

from alumia.app import create_app
from alumia.config import Settings
from alumia.errors import AppError
from alumia.listen import prepare_inherited
from alumia.logs import configure_logging
from alumia.services import accounts
from alumia.sim.env import sim_env
from alumia.sim.server import SimServer
from alumia.startup import StartupError, check_startup
from alumia.storage import accounts as account_rows
from alumia.storage.db import Database
from alumia.storage.migrate import upgrade

DEMO_ORG = "demo"
DEMO_OWNER = "owner@demo.alumia.local"
LOGIN_FILE = "demo-login.json"
# How long the banner waits for the server to answer /healthz before giving up on printing it.
_READY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class DemoLogin:
    """The demo owner's password and API key, and whether they were kept from an earlier start."""

    password: str
    api_key: str
    kept: bool


def _read_saved(path: Path) -> tuple[str | None, str | None]:
    """The password and key saved by an earlier start; (None, None) when there is no usable file."""
    try:
        saved = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(saved, dict):
        return None, None
    password, key = saved.get("password"), saved.get("apiKey")
    return (password if isinstance(password, str) else None), (key if isinstance(key, str) else None)


def _write_saved(path: Path, password: str, key: str) -> None:
    """Save the login readable by its owner only, replacing the old file whole (never half-written)."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"email": DEMO_OWNER, "password": password, "apiKey": key}, out)
    os.replace(temp, path)


def _password_works(password_hash: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def _key_works(db: Database, key: str) -> bool:
    try:
        principal = await accounts.authenticate(db, key, production=False)
    except AppError:
        return False
    return principal.org_slug == DEMO_ORG


async def _seed(settings: Settings) -> DemoLogin:
    """Create the demo org on first run; keep the saved owner password and API key while they work."""
    path = settings.data_dir / LOGIN_FILE
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            exists = await account_rows.org_by_slug(conn, DEMO_ORG) is not None
        if not exists:
            await accounts.create_org(db, settings, slug=DEMO_ORG, owner_email=DEMO_OWNER, name="Demo")
        password, key = _read_saved(path)
        async with db.read() as conn:
            owner = await account_rows.user_by_email(conn, DEMO_OWNER)
        kept_password = False
        if password and owner:
            # argon2 takes ~200 ms: on a worker thread, as services/passwords.py does.
            kept_password = await asyncio.to_thread(_password_works, owner["password_hash"], password)
        kept_key = bool(key and await _key_works(db, key))
        if not kept_password:
            password = await accounts.reset_password(db, DEMO_OWNER)
        if not kept_key:
            key = (await accounts.create_api_key_for(db, settings, org_slug=DEMO_ORG, user_email=None,
                                                     name="demo"))["key"]
        assert password is not None and key is not None
        if not (kept_password and kept_key):
            _write_saved(path, password, key)
        return DemoLogin(password=password, api_key=key, kept=kept_password and kept_key)
    finally:
        await db.dispose()


def _listening_port(fd: int) -> int:
    """The port of an inherited listening socket (the descriptor stays open for uvicorn)."""
    with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:  # a duplicate of fd
        port: int = sock.getsockname()[1]
        return port


def _local_host(host: str) -> str:
    """The address to reach a server bound to `host` from this machine (a wildcard binds loopback too)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def banner(base: str, login: DemoLogin, settings: Settings, simulator_port: int) -> str:
    """What the demo prints once it answers: where to sign in first, then the API key and how to use it."""
    login_file = settings.data_dir / LOGIN_FILE
    kept = ("kept from the last start" if login.kept else "new")
    return f"""
Alumia demo is ready: sign in at {base}/login
  sign in    {base}/login   (owner login {DEMO_OWNER} / {login.password})
  billing    {base}/{DEMO_ORG}/billing   (balance, BYOK keys, transactions)
  lab        {base}/{DEMO_ORG}/lab
  API key    {login.api_key}
  login and key are {kept}; they stay the same across restarts ({login_file}, delete it for new ones)
  database   {settings.resolved_database_url}
  providers  every provider is the simulator at http://127.0.0.1:{simulator_port}

Try it with the official openai client:
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{login.api_key}")
  print(client.chat.completions.create(model="gpt-5.6-luna",
        messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)

Add a BYOK key, then call again and see the route change:
  curl -s -X POST {base}/api/v1/billing/byok-keys -H "Authorization: Bearer {login.api_key}" \\
       -H "Content-Type: application/json" \\
       -d '{{"provider": "openai", "apiKey": "sk-demo-byok-0123456789abcdef"}}'
  curl -s {base}/api/v1/billing -H "Authorization: Bearer {login.api_key}"
"""


def _print_when_ready(health_url: str, text: str, stop: threading.Event) -> None:
    """Print `text` once `health_url` answers 200: a URL in the banner is one that already works."""
    # No proxy: an http_proxy in the environment must not stand between us and our own loopback server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with opener.open(health_url, timeout=1) as answer:
                if answer.status == 200:
                    print(text, flush=True)
                    return
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.1)


def run_demo(port: int, fd: int | None = None, host: str = "127.0.0.1") -> None:
    """Start the simulator and the service on `host`:`port` (or on the listening socket `fd`) and, once
    it answers, print how to use them."""
    configure_logging("INFO")
    with SimServer() as simulator:
        settings = Settings.from_env({**os.environ, **sim_env(simulator.host, simulator.port)})
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            upgrade(settings.resolved_database_url)
        except (DBAPIError, OSError) as exc:
            raise StartupError("cannot migrate the database: check ALUMIA_DATABASE_URL and that the database "
                               f"is running ({type(exc).__name__})") from None
        asyncio.run(check_startup(settings))
        login = asyncio.run(_seed(settings))
        if fd is not None:
            port, host = _listening_port(fd), "127.0.0.1"
        base = f"http://{_local_host(host)}:{port}"
        stop = threading.Event()
        announcer = threading.Thread(target=_print_when_ready, name="demo-banner", daemon=True,
                                     args=(f"{base}/healthz", banner(base, login, settings, simulator.port),
                                           stop))
        announcer.start()
        try:
            uvicorn.run(create_app(settings), host=host, port=port,
                        fd=prepare_inherited(fd) if fd is not None else None, log_config=None,
                        access_log=False)
        finally:
            stop.set()

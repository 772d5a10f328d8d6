"""`alumia demo`: the embedded default, the simulator as every provider, and a seeded org to try."""

import asyncio
import os
import socket

import uvicorn
from sqlalchemy.exc import DBAPIError

from alumia.app import create_app
from alumia.config import Settings
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


async def _seed(settings: Settings) -> tuple[str, str]:
    """Create the demo org on first run; every run gets a fresh owner password and API key."""
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            exists = await account_rows.org_by_slug(conn, DEMO_ORG) is not None
        if not exists:
            await accounts.create_org(db, settings, slug=DEMO_ORG, owner_email=DEMO_OWNER, name="Demo")
        password = await accounts.reset_password(db, DEMO_OWNER)
        key = await accounts.create_api_key_for(db, settings, org_slug=DEMO_ORG, user_email=None,
                                                name="demo")
        return password, key["key"]
    finally:
        await db.dispose()


def _listening_port(fd: int) -> int:
    """The port of an inherited listening socket (the descriptor stays open for uvicorn)."""
    with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:  # a duplicate of fd
        return sock.getsockname()[1]


def run_demo(port: int, fd: int | None = None) -> None:
    """Start the simulator and the service on 127.0.0.1 (or on the listening socket `fd`) and print how
    to use them."""
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
        password, key = asyncio.run(_seed(settings))
        if fd is not None:
            port = _listening_port(fd)
        base = f"http://127.0.0.1:{port}"
        print(f"""
Alumia demo: every provider is the simulator at http://127.0.0.1:{simulator.port}
  database   {settings.resolved_database_url}
  org        {DEMO_ORG}   (owner login {DEMO_OWNER} / {password})
  API key    {key}

Try it with the official openai client:
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{key}")
  print(client.chat.completions.create(model="gpt-5.6-luna",
        messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)

Add a BYOK key, then call again and see the route change:
  curl -s -X POST {base}/api/v1/billing/byok-keys -H "Authorization: Bearer {key}" \\
       -H "Content-Type: application/json" \\
       -d '{{"provider": "openai", "apiKey": "sk-demo-byok-0123456789abcdef"}}'
  curl -s {base}/api/v1/billing -H "Authorization: Bearer {key}"
""", flush=True)
        uvicorn.run(create_app(settings), host="127.0.0.1", port=port, fd=fd, log_config=None,
                    access_log=False)

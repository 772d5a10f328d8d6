"""`alumia ...`: serve, demo, database, orgs, users, API keys, deposits, vault rotation, simulator."""

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from alumia.config import Settings
from alumia.errors import AppError
from alumia.storage.db import Database

app = typer.Typer(no_args_is_help=True, add_completion=False, help="The Alumia model-call gateway.")
db_app = typer.Typer(no_args_is_help=True, help="The database schema.")
org_app = typer.Typer(no_args_is_help=True, help="Orgs.")
user_app = typer.Typer(no_args_is_help=True, help="Users.")
apikey_app = typer.Typer(no_args_is_help=True, help="Org API keys.")
billing_app = typer.Typer(no_args_is_help=True, help="Billing.")
vault_app = typer.Typer(no_args_is_help=True, help="The key vault.")
for sub, name in ((db_app, "db"), (org_app, "org"), (user_app, "user"), (apikey_app, "apikey"),
                  (billing_app, "billing"), (vault_app, "vault")):
    app.add_typer(sub, name=name)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _with_db(work: Callable[[Database, Settings], Awaitable[Any]]) -> Any:
    settings = Settings.from_env()

    async def main() -> Any:
        db = Database(settings.resolved_database_url)
        try:
            return await work(db, settings)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except AppError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None


def _emit(result: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        typer.echo("\n".join(lines))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the latest version."""
    from alumia.storage.migrate import upgrade

    settings = Settings.from_env()
    if settings.resolved_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    typer.echo("database is up to date")


@org_app.command("create")
def org_create(slug: Annotated[str, typer.Option()], owner_email: Annotated[str, typer.Option()],
               as_json: JsonFlag = False) -> None:
    """Create an org and its owner; prints the owner's one-time password."""
    from alumia.services.accounts import create_org

    result = _with_db(lambda db, s: create_org(db, s, slug=slug, owner_email=owner_email))
    password = result["password"] or "(existing user: password unchanged)"
    _emit(result, as_json, [f"org {result['slug']} created ({result['id']})",
                            f"owner: {result['owner']['email']}", f"password (shown once): {password}"])


@user_app.command("create")
def user_create(org: Annotated[str, typer.Option()], email: Annotated[str, typer.Option()],
                role: Annotated[str, typer.Option()] = "member", as_json: JsonFlag = False) -> None:
    """Add a user to an org with a role (owner, admin, member)."""
    from alumia.services.accounts import create_user

    result = _with_db(lambda db, _s: create_user(db, org_slug=org, email=email, role=role))
    password = result["password"] or "(existing user: password unchanged)"
    _emit(result, as_json, [f"{result['email']} is now {role} of {org}",
                            f"password (shown once): {password}"])


@apikey_app.command("create")
def apikey_create(org: Annotated[str, typer.Option()],
                  user: Annotated[str | None, typer.Option(help="Member email; default the owner.")] = None,
                  name: Annotated[str, typer.Option()] = "cli",
                  scope: Annotated[list[str] | None, typer.Option(
                      help="A scope of the key (repeatable): gateway, management, billing:meter. "
                           "Default: gateway management.")] = None,
                  as_json: JsonFlag = False) -> None:
    """Create an org API key; prints the key once."""
    from alumia.services.accounts import DEFAULT_SCOPES, create_api_key_for

    scopes = " ".join(scope) if scope else DEFAULT_SCOPES
    result = _with_db(lambda db, s: create_api_key_for(db, s, org_slug=org, user_email=user, name=name,
                                                       scopes=scopes))
    _emit(result, as_json, [f"API key for {result['user']} in {org} (shown once):", result["key"]])


@billing_app.command("deposit")
def billing_deposit(org: Annotated[str, typer.Option()], cents: Annotated[int, typer.Option()],
                    idempotency_key: Annotated[str | None, typer.Option()] = None,
                    as_json: JsonFlag = False) -> None:
    """Credit a direct deposit (non-production only)."""
    from alumia.services.billing import deposit_for_slug

    key = idempotency_key or str(uuid.uuid4())
    result = _with_db(lambda db, s: deposit_for_slug(db, s, org_slug=org, amount_cents=cents,
                                                     idempotency_key=key))
    _emit(result, as_json, [f"deposited {cents} cents to {org}; balance {result['balanceCents']} cents"])


@vault_app.command("rotate")
def vault_rotate(as_json: JsonFlag = False) -> None:
    """Add a key-encryption-key version (key file) and rewrap every stored key onto the primary one."""
    from alumia.services.vault_admin import VaultStartupError, rotate

    try:
        result = _with_db(rotate)
    except VaultStartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    data = {"primaryVersion": result.primary_version, "addedVersion": result.added_version,
            "rewrapped": result.rewrapped}
    lines = [f"primary key version: {result.primary_version}", f"rewrapped records: {result.rewrapped}"]
    if not result.added_version:
        lines.append("keys come from ALUMIA_MASTER_KEYS: add a new version there first to rotate")
    _emit(data, as_json, lines)


FdOption = Annotated[int | None, typer.Option(
    "--fd", help="Serve on this already-listening socket (inherited file descriptor) instead of binding "
                 "--host/--port: whoever starts the process owns the port, so it can never be taken "
                 "between choosing and binding it.")]


def _ready_to_serve() -> Settings:
    """The settings, after the start-up checks; a failed check is one line on stderr and exit status 1."""
    from alumia.startup import StartupError, check_startup, settings_from_env

    try:
        settings = settings_from_env()
        asyncio.run(check_startup(settings))
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    return settings


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, fd: FdOption = None) -> None:
    """Run the service (the schema must be up to date: `alumia db upgrade`)."""
    import uvicorn

    settings = _ready_to_serve()
    # X-Forwarded-For is believed only from the proxies a setting names (uvicorn's default trusts 127.0.0.1).
    proxies = settings.trusted_proxies.strip()
    uvicorn.run("alumia.app:create_app_from_env", factory=True, host=host, port=port, fd=fd,
                workers=workers, loop="uvloop", http="httptools", access_log=False, log_config=None,
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)


@app.command()
def sim(port: int = 9000, host: str = "127.0.0.1",
        print_env: Annotated[bool, typer.Option("--print-env")] = False) -> None:
    """Run the simulated upstream for every provider, or print the settings that point at it."""
    from alumia.sim.env import sim_env

    if print_env:
        typer.echo("\n".join(f"{k}={v}" for k, v in sim_env(host, port).items()))
        return
    from alumia.sim.server import run_sim

    run_sim(host, port)


@app.command()
def demo(port: int = 8000, fd: FdOption = None) -> None:
    """The embedded default with the simulator as every provider and a seeded org `demo`."""
    from alumia.demo import run_demo
    from alumia.startup import StartupError, settings_from_env

    try:
        settings_from_env()
        run_demo(port=port, fd=fd)
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


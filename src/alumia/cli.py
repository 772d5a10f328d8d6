"""`alumia ...`: serve, demo, database, orgs, users, API keys, deposits, vault rotation, simulator."""

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from alumia.clock import iso
from alumia.config import Settings
from alumia.errors import AppError
from alumia.storage.accounts import ApiKeyRow
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
JsonListFlag = Annotated[bool, typer.Option("--json", help="Print one JSON array.")]


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


def _emit(result: dict[str, Any] | list[dict[str, Any]], as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        typer.echo("\n".join(lines))


def _revision_text(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "(none)"


def _migration_step(work: Callable[[str], Any]) -> Any:
    """Run a blocking migration function on the configured database; an unreachable one is one line."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    settings = Settings.from_env()
    url = settings.resolved_database_url
    try:
        return work(url)
    except (DBAPIError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        shown = make_url(url).render_as_string(hide_password=True)
        typer.echo(f"error: cannot open the database {shown} ({reason}): check ALUMIA_DATABASE_URL "
                   "and that the database is running", err=True)
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Create or migrate the schema to the latest version, and say which of the two it did."""
    from alumia.storage.migrate import upgrade

    settings = Settings.from_env()
    if settings.resolved_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    result = _migration_step(upgrade)
    after = _revision_text(result.after)
    if result.created:
        action, line = "created", f"created the schema at revision {after}"
    elif result.changed:
        before = _revision_text(result.before)
        action, line = "migrated", f"migrated the schema from revision {before} to {after}"
    else:
        action, line = "unchanged", f"already at revision {after}: nothing to do"
    _emit({"action": action, "before": list(result.before), "after": list(result.after)}, as_json, [line])


@db_app.command("current")
def db_current(as_json: JsonFlag = False) -> None:
    """Show the database's schema revision and whether it is the one this version expects."""
    from alumia.storage.migrate import current_revisions

    revisions = _migration_step(current_revisions)
    head = _revision_text(revisions.head)
    if revisions.up_to_date:
        line = f"revision {head} (up to date)"
    elif not revisions.current:
        line = f"no schema yet (this version expects revision {head}): run `alumia db upgrade`"
    else:
        line = (f"revision {_revision_text(revisions.current)}; this version expects {head}: "
                "run `alumia db upgrade`")
    _emit({"current": list(revisions.current), "head": list(revisions.head),
           "upToDate": revisions.up_to_date}, as_json, [line])


@org_app.command("create")
def org_create(slug: Annotated[str, typer.Option()], owner_email: Annotated[str, typer.Option()],
               as_json: JsonFlag = False) -> None:
    """Create an org and its owner; prints the owner's one-time password."""
    from alumia.services.accounts import create_org

    result = _with_db(lambda db, s: create_org(db, s, slug=slug, owner_email=owner_email))
    password = result["password"] or "(existing user: password unchanged)"
    _emit(result, as_json, [f"org {result['slug']} created ({result['id']})",
                            f"owner: {result['owner']['email']}", f"password (shown once): {password}"])


@org_app.command("list")
def org_list(as_json: JsonListFlag = False) -> None:
    """List every org: slug, name, balance and member count."""
    from alumia.domain.money import MICROCENTS_PER_CENT
    from alumia.services.accounts import list_orgs

    rows = _with_db(lambda db, _s: list_orgs(db))
    data = [{"id": r.id, "slug": r.slug, "name": r.name, "balanceMicrocents": r.balance_microcents,
             "members": r.members, "createdAt": iso(r.created_at)} for r in rows]
    lines = [f"{r.slug:<24} {r.balance_microcents / MICROCENTS_PER_CENT / 100:>12,.2f} USD  "
             f"{r.members} member{'s' if r.members != 1 else ''}  {r.name}" for r in rows]
    _emit(data, as_json, lines or ["no orgs yet: `alumia org create --slug S --owner-email E`"])


@user_app.command("create")
def user_create(org: Annotated[str, typer.Option()], email: Annotated[str, typer.Option()],
                role: Annotated[str, typer.Option()] = "member", as_json: JsonFlag = False) -> None:
    """Add a user to an org with a role (owner, admin, member)."""
    from alumia.services.accounts import create_user

    result = _with_db(lambda db, _s: create_user(db, org_slug=org, email=email, role=role))
    password = result["password"] or "(existing user: password unchanged)"
    _emit(result, as_json, [f"{result['email']} is now {role} of {org}",
                            f"password (shown once): {password}"])


@user_app.command("reset-password")
def user_reset_password(org: Annotated[str, typer.Option()], email: Annotated[str, typer.Option()],
                        as_json: JsonFlag = False) -> None:
    """Give a member of an org a new random password; prints it once (the old one stops working)."""
    from alumia.services.accounts import reset_member_password

    password = _with_db(lambda db, _s: reset_member_password(db, org_slug=org, email=email))
    _emit({"org": org, "email": email.strip().lower(), "password": password}, as_json,
          [f"new password for {email.strip().lower()} (shown once): {password}"])


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


def _api_key_json(row: ApiKeyRow) -> dict[str, Any]:
    """An API key as the CLI prints it: the prefix, never the key."""
    return {"id": row.id, "org": row.org_slug, "user": row.user_email, "name": row.name,
            "prefix": row.prefix, "scopes": list(row.scopes), "createdAt": iso(row.created_at),
            "lastUsedAt": iso(row.last_used_at), "revokedAt": iso(row.revoked_at)}


@apikey_app.command("list")
def apikey_list(org: Annotated[str, typer.Option()],
                include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
                as_json: JsonListFlag = False) -> None:
    """List an org's API keys by id and prefix (the keys themselves are never stored)."""
    from alumia.services.accounts import org_api_keys

    rows = _with_db(lambda db, _s: org_api_keys(db, org, include_revoked=include_revoked))
    lines = [f"{r.id}  {r.prefix}...  {r.name:<12} {r.user_email:<28} {' '.join(r.scopes)}"
             f"{'  (revoked)' if r.revoked_at else ''}" for r in rows]
    _emit([_api_key_json(r) for r in rows], as_json, lines or [f"no live API keys in {org}"])


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="The key's id, as `apikey list` shows.")],
                  as_json: JsonFlag = False) -> None:
    """Revoke an API key by id: the next call with it is refused. Revoking it again changes nothing."""
    from alumia.services.accounts import revoke_api_key_by_id

    result = _with_db(lambda db, _s: revoke_api_key_by_id(db, key_id))
    key = result.key
    line = (f"API key {key.prefix}... of {key.org_slug} was already revoked" if result.already_revoked
            else f"revoked API key {key.prefix}... ({key.name}, {key.user_email}) of {key.org_slug}")
    _emit({**_api_key_json(key), "alreadyRevoked": result.already_revoked}, as_json, [line])


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
    from alumia.listen import prepare_inherited

    uvicorn.run("alumia.app:create_app_from_env", factory=True, host=host, port=port,
                fd=prepare_inherited(fd) if fd is not None else None,
                workers=workers, loop="uvloop", http="httptools", access_log=False, log_config=None,
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)


@app.command()
def settings(markdown: Annotated[bool, typer.Option(
        "--markdown", help="Print docs/settings.md: the table of every setting.")] = False) -> None:
    """List every setting: its environment variable, default and meaning."""
    from alumia.settings_doc import settings_markdown, variable_name

    if markdown:
        typer.echo(settings_markdown(), nl=False)
        return
    for field, info in Settings.model_fields.items():
        typer.echo(f"{variable_name(field)}\n    {info.description}")


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
def demo(port: int = 8000, host: str = "127.0.0.1", fd: FdOption = None) -> None:
    """The embedded default with the simulator as every provider and a seeded org `demo`; its owner login
    and API key are kept across restarts in the data dir (demo-login.json, delete it for new ones)."""
    from alumia.demo import run_demo
    from alumia.startup import StartupError, settings_from_env

    try:
        settings_from_env()
        run_demo(port=port, fd=fd, host=host)
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


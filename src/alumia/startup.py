"""What `alumia serve` and `alumia demo` check before serving: each misconfiguration found at start is one
line that says what to do (StartupError), not a traceback from deep inside a worker."""

from pydantic import ValidationError
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from alumia.config import Settings
from alumia.services.vault_admin import VaultStartupError, open_vault
from alumia.storage.db import Database


class StartupError(Exception):
    """The service cannot start; the message is one line for the operator."""


def settings_from_env() -> Settings:
    """The settings, or StartupError naming the first invalid variable and what it must be."""
    try:
        return Settings.from_env()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        message = first["msg"].removeprefix("Value error, ")
        variable = f"ALUMIA_{field.upper()}"
        raise StartupError(message if variable in message else f"{variable}: {message}") from None


def _current_heads(conn: Connection) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(conn).get_current_heads())


async def check_startup(settings: Settings) -> None:
    """The data dir exists (or can be made), the database answers, its schema is current and the vault
    opens (keys present and right); else StartupError."""
    from alembic.script import ScriptDirectory

    from alumia.storage.migrate import alembic_config

    url = settings.resolved_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    if not settings.data_dir.is_dir():
        if url.startswith("sqlite"):
            raise StartupError(f"the data directory {settings.data_dir} does not exist: run "
                               "`alumia db upgrade` (it creates it and the database), or set ALUMIA_DATA_DIR")
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create the data directory {settings.data_dir} ({exc.strerror}): "
                               "create it or set ALUMIA_DATA_DIR") from None
    db = Database(url)
    try:
        try:
            async with db.lookup() as conn:
                current = await conn.run_sync(_current_heads)
        except (DBAPIError, OSError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise StartupError(f"cannot open the database {shown} ({reason}): check ALUMIA_DATABASE_URL "
                               "and that the database is running") from None
        heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
        if current != heads:
            raise StartupError(f"the database {shown} is not migrated to this version: "
                               "run `alumia db upgrade`")
        try:
            await open_vault(db, settings)
        except VaultStartupError as exc:
            raise StartupError(str(exc)) from None
    finally:
        await db.dispose()

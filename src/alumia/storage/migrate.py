"""Alembic, driven from code: `alumia db upgrade` / `alumia db current` and the test fixtures call these."""

import asyncio
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from alumia.storage.db import private_sqlite_file

_MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True, slots=True)
class Revisions:
    """Where a database's schema stands against this version's migrations."""

    current: tuple[str, ...]  # the revisions the database is at; empty for a database with no schema
    head: tuple[str, ...]  # the revisions this version of the code expects

    @property
    def up_to_date(self) -> bool:
        """True when the database is at this version's head revisions."""
        return set(self.current) == set(self.head)


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    """What `upgrade` did: the revisions before and after."""

    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def created(self) -> bool:
        """True when the database had no schema before: the upgrade created it."""
        return not self.before

    @property
    def changed(self) -> bool:
        """True when the upgrade applied at least one migration."""
        return set(self.before) != set(self.after)


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revisions() -> tuple[str, ...]:
    """The head revisions of this version's migrations, sorted."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()))


def _heads_of(conn: Connection) -> tuple[str, ...]:
    return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


async def _current_async(database_url: str) -> tuple[str, ...]:
    # A plain engine, not storage.db.Database: this runs before the schema (and its pragmas' tables) exists.
    engine = create_async_engine(database_url, hide_parameters=True)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_heads_of)
    finally:
        await engine.dispose()


def _missing_sqlite_file(database_url: str) -> bool:
    url = make_url(database_url)
    database = url.database
    return (url.get_backend_name() == "sqlite" and database is not None and database not in ("", ":memory:")
            and not Path(database).exists())


def current_revisions(database_url: str) -> Revisions:
    """The database's revisions and this version's heads (blocking; run it outside the event loop).

    A SQLite file that does not exist has no schema; it is not created just to be looked at.
    """
    current = () if _missing_sqlite_file(database_url) else asyncio.run(_current_async(database_url))
    return Revisions(current=current, head=head_revisions())


def upgrade(database_url: str, revision: str = "heads") -> UpgradeResult:
    """Bring the database schema up to `revision` (blocking; run it outside the event loop) and say what
    changed."""
    private_sqlite_file(database_url)
    before = current_revisions(database_url).current
    command.upgrade(alembic_config(database_url), revision)
    return UpgradeResult(before=before, after=current_revisions(database_url).current)

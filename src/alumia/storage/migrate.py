"""Alembic, driven from code: `alumia db upgrade` and the test fixtures call `upgrade`."""

from pathlib import Path

from alembic import command
from alembic.config import Config

from alumia.storage.db import private_sqlite_file

_MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "heads") -> None:
    """Bring the database schema up to `revision` (blocking; run it outside the event loop)."""
    private_sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), revision)

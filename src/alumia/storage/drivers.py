"""What the hot path needs to open a database with its driver directly, without SQLAlchemy.

The per-call statements (the caller's context, reservations, settlements) run on the drivers
themselves, prepared once: SQLAlchemy's compile and result machinery costs more CPU per statement than
the statement does. Everything else keeps SQLAlchemy (storage/db.py).
"""

from sqlalchemy.engine import make_url


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (`sqlite+aiosqlite:///path`), or None for another database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    return parsed.database or ":memory:"


def asyncpg_dsn(url: str) -> str:
    """The asyncpg DSN of a PostgreSQL URL (`postgresql+asyncpg://...` without the driver name)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)

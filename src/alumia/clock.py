"""Time and identifiers, in one place so every record agrees on them."""

import secrets
import uuid
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """An ISO-8601 UTC timestamp with a Z, or None."""
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")


def new_id() -> str:
    """A random record id."""
    return str(uuid.uuid4())


def new_request_id() -> str:
    """A gateway request id, as sent in X-Alumia-Request-Id."""
    return "req_" + secrets.token_hex(12)

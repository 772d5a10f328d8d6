"""One check value per key-encryption-key version, so start-up can tell a wrong key from a right one."""

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import kek_checks


async def all_checks(conn: AsyncConnection) -> dict[int, bytes]:
    """Check values by KEK version."""
    rows = await conn.execute(select(kek_checks.c.version, kek_checks.c.check_value))
    return {int(version): bytes(value) for version, value in rows}


async def insert_check(conn: AsyncConnection, version: int, value: bytes, now: datetime) -> None:
    """Remember the check value of a version seen for the first time."""
    await conn.execute(insert(kek_checks).values(version=version, check_value=value, created_at=now))

"""BYOK key records (ciphertext only) and their audit trail."""

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import audit_entries, byok_keys, users

_PUBLIC_COLUMNS = (byok_keys.c.id, byok_keys.c.provider, byok_keys.c.masked_key, byok_keys.c.status,
                   byok_keys.c.verification, byok_keys.c.last_verified_at,
                   byok_keys.c.created_at, byok_keys.c.deactivated_at, byok_keys.c.last_used_at,
                   users.c.email.label("created_by_email"))


async def insert_key(conn: AsyncConnection, *, key_id: str, org_id: str, provider: str,
                     ciphertext: bytes, kek_version: int, masked_key: str, created_by: str,
                     verification: str, now: datetime) -> None:
    """Store a new active key record; a verified or restricted key was verified now."""
    await conn.execute(insert(byok_keys).values(
        id=key_id, org_id=org_id, provider=provider, ciphertext=ciphertext, kek_version=kek_version,
        masked_key=masked_key, status="active", created_by=created_by, created_at=now,
        verification=verification,
        last_verified_at=None if verification == "unverified" else now))


async def active_key_for_provider(conn: AsyncConnection, org_id: str, provider: str) -> dict[str, Any] | None:
    """The org's active key record for a provider."""
    row = (await conn.execute(select(byok_keys.c.id, byok_keys.c.masked_key).where(
        byok_keys.c.org_id == org_id, byok_keys.c.provider == provider,
        byok_keys.c.status == "active"))).first()
    return dict(row._mapping) if row else None


async def deactivate(conn: AsyncConnection, key_id: str, now: datetime) -> bool:
    """Mark a key inactive; False when it already was."""
    result = await conn.execute(update(byok_keys).where(
        byok_keys.c.id == key_id, byok_keys.c.status == "active").values(
        status="inactive", deactivated_at=now))
    return result.rowcount == 1


async def key_in_org(conn: AsyncConnection, org_id: str, key_id: str) -> dict[str, Any] | None:
    """One of the org's key records, public columns only (another org's id is not found)."""
    row = (await conn.execute(select(*_PUBLIC_COLUMNS)
                              .join(users, users.c.id == byok_keys.c.created_by)
                              .where(byok_keys.c.org_id == org_id, byok_keys.c.id == key_id))).first()
    return dict(row._mapping) if row else None


async def list_keys(conn: AsyncConnection, org_id: str) -> list[dict[str, Any]]:
    """The org's key records, active first, newest first; public columns only."""
    rows = await conn.execute(select(*_PUBLIC_COLUMNS)
                              .join(users, users.c.id == byok_keys.c.created_by)
                              .where(byok_keys.c.org_id == org_id)
                              .order_by(byok_keys.c.status, byok_keys.c.created_at.desc()))
    return [dict(r._mapping) for r in rows]


async def touch_last_used(conn: AsyncConnection, key_id: str, now: datetime) -> None:
    """Record that a key paid for a call."""
    await conn.execute(update(byok_keys).where(byok_keys.c.id == key_id).values(last_used_at=now))


async def ciphertexts_not_on(conn: AsyncConnection, version: int, limit: int) -> list[dict[str, Any]]:
    """A batch of records whose data key is wrapped by another KEK version than `version`."""
    rows = await conn.execute(select(byok_keys.c.id, byok_keys.c.org_id, byok_keys.c.provider,
                                     byok_keys.c.ciphertext, byok_keys.c.kek_version)
                              .where(byok_keys.c.kek_version != version).limit(limit))
    return [dict(r._mapping) for r in rows]


async def replace_ciphertext(conn: AsyncConnection, key_id: str, old_version: int, ciphertext: bytes,
                             version: int) -> None:
    """Store a rewrapped ciphertext, unless another rotation got there first."""
    await conn.execute(update(byok_keys).where(
        byok_keys.c.id == key_id, byok_keys.c.kek_version == old_version).values(
        ciphertext=ciphertext, kek_version=version))


async def kek_versions_in_use(conn: AsyncConnection) -> set[int]:
    """Every KEK version some record still needs."""
    rows = await conn.execute(select(byok_keys.c.kek_version).distinct())
    return {int(r[0]) for r in rows}


async def insert_audit(conn: AsyncConnection, *, org_id: str, actor_user_id: str | None, action: str,
                       target_id: str | None, provider: str | None, masked_key: str | None,
                       now: datetime) -> None:
    """Record who did what to which key (masked, never the key)."""
    await conn.execute(insert(audit_entries).values(
        org_id=org_id, actor_user_id=actor_user_id, action=action, target_id=target_id,
        provider=provider, masked_key=masked_key, created_at=now))

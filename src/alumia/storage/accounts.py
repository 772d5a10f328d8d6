"""Orgs, users, memberships and org API keys."""

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import api_keys, memberships, orgs, users


async def insert_org(conn: AsyncConnection, *, org_id: str, slug: str, name: str, now: datetime) -> None:
    """Create an org with a zero balance."""
    await conn.execute(insert(orgs).values(id=org_id, slug=slug, name=name, created_at=now))


async def org_by_slug(conn: AsyncConnection, slug: str) -> dict | None:
    """The org with this slug."""
    row = (await conn.execute(select(orgs).where(orgs.c.slug == slug))).first()
    return dict(row._mapping) if row else None


async def org_by_id(conn: AsyncConnection, org_id: str) -> dict | None:
    """The org with this id."""
    row = (await conn.execute(select(orgs).where(orgs.c.id == org_id))).first()
    return dict(row._mapping) if row else None


async def user_by_email(conn: AsyncConnection, email: str) -> dict | None:
    """The user with this (lower-cased) email."""
    row = (await conn.execute(select(users).where(users.c.email == email))).first()
    return dict(row._mapping) if row else None


async def insert_user(conn: AsyncConnection, *, user_id: str, email: str, password_hash: str,
                      now: datetime) -> None:
    """Create a user."""
    await conn.execute(insert(users).values(id=user_id, email=email, password_hash=password_hash,
                                            created_at=now))


async def insert_membership(conn: AsyncConnection, *, org_id: str, user_id: str, role: str,
                            now: datetime) -> None:
    """Add a user to an org with a role."""
    await conn.execute(insert(memberships).values(org_id=org_id, user_id=user_id, role=role,
                                                  created_at=now))


async def membership(conn: AsyncConnection, org_id: str, user_id: str) -> str | None:
    """The user's role in the org, or None."""
    result = await conn.execute(select(memberships.c.role).where(
        memberships.c.org_id == org_id, memberships.c.user_id == user_id))
    return result.scalar_one_or_none()


async def owner_of(conn: AsyncConnection, org_id: str) -> dict | None:
    """The org's first owner."""
    row = (await conn.execute(
        select(users).join(memberships, memberships.c.user_id == users.c.id)
        .where(memberships.c.org_id == org_id, memberships.c.role == "owner")
        .order_by(memberships.c.created_at).limit(1))).first()
    return dict(row._mapping) if row else None


async def insert_api_key(conn: AsyncConnection, *, key_id: str, org_id: str, user_id: str, name: str,
                         prefix: str, key_hash: str, scopes: str, now: datetime) -> None:
    """Store an org API key by its hash."""
    await conn.execute(insert(api_keys).values(
        id=key_id, org_id=org_id, user_id=user_id, name=name, prefix=prefix, key_hash=key_hash,
        scopes=scopes, created_at=now))


async def principal_by_key_hash(conn: AsyncConnection, key_hash: str) -> dict | None:
    """Who a live API key speaks for: the key, its org and its user's role there."""
    row = (await conn.execute(
        select(api_keys.c.id.label("api_key_id"), api_keys.c.scopes, api_keys.c.user_id,
               orgs.c.id.label("org_id"), orgs.c.slug.label("org_slug"), memberships.c.role)
        .join(orgs, orgs.c.id == api_keys.c.org_id)
        .join(memberships, (memberships.c.org_id == api_keys.c.org_id)
              & (memberships.c.user_id == api_keys.c.user_id))
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)))).first()
    return dict(row._mapping) if row else None


async def list_api_keys(conn: AsyncConnection, org_id: str, user_id: str | None) -> list[dict]:
    """An org's API keys that are not revoked, newest first; only one user's when user_id is given."""
    query = select(api_keys).where(api_keys.c.org_id == org_id, api_keys.c.revoked_at.is_(None))
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    rows = await conn.execute(query.order_by(api_keys.c.created_at.desc()))
    return [dict(r._mapping) for r in rows]


async def api_key_in_org(conn: AsyncConnection, org_id: str, key_id: str) -> dict | None:
    """An org's API key by id (another org's id is not found)."""
    row = (await conn.execute(select(api_keys).where(
        api_keys.c.org_id == org_id, api_keys.c.id == key_id))).first()
    return dict(row._mapping) if row else None


async def revoke_api_key(conn: AsyncConnection, key_id: str, now: datetime) -> None:
    """Revoke an API key (idempotent: the first revocation time stays)."""
    await conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                       .values(revoked_at=now))


async def touch_api_key(conn: AsyncConnection, key_id: str, now: datetime) -> None:
    """Record that a key made a call."""
    await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))


async def set_password(conn: AsyncConnection, user_id: str, password_hash: str) -> None:
    """Replace a user's password hash."""
    await conn.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))

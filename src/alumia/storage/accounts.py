"""Orgs, users, memberships and org API keys."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import api_keys, memberships, orgs, users


@dataclass(frozen=True, slots=True)
class OrgRow:
    """An org as the operator lists it: who it is, its balance and how many people are in it."""

    id: str
    slug: str
    name: str
    balance_microcents: int
    members: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    """An org API key as the operator sees it: never the key or its hash, only its prefix."""

    id: str
    org_id: str
    org_slug: str
    user_email: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


async def insert_org(conn: AsyncConnection, *, org_id: str, slug: str, name: str, now: datetime) -> None:
    """Create an org with a zero balance."""
    await conn.execute(insert(orgs).values(id=org_id, slug=slug, name=name, created_at=now))


async def org_by_slug(conn: AsyncConnection, slug: str) -> dict[str, Any] | None:
    """The org with this slug."""
    row = (await conn.execute(select(orgs).where(orgs.c.slug == slug))).first()
    return dict(row._mapping) if row else None


async def org_by_id(conn: AsyncConnection, org_id: str) -> dict[str, Any] | None:
    """The org with this id."""
    row = (await conn.execute(select(orgs).where(orgs.c.id == org_id))).first()
    return dict(row._mapping) if row else None


async def user_by_email(conn: AsyncConnection, email: str) -> dict[str, Any] | None:
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


async def owner_of(conn: AsyncConnection, org_id: str) -> dict[str, Any] | None:
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


async def principal_by_key_hash(conn: AsyncConnection, key_hash: str) -> dict[str, Any] | None:
    """Who a live API key speaks for: the key, its org and its user's role there."""
    row = (await conn.execute(
        select(api_keys.c.id.label("api_key_id"), api_keys.c.scopes, api_keys.c.user_id,
               orgs.c.id.label("org_id"), orgs.c.slug.label("org_slug"), memberships.c.role)
        .join(orgs, orgs.c.id == api_keys.c.org_id)
        .join(memberships, (memberships.c.org_id == api_keys.c.org_id)
              & (memberships.c.user_id == api_keys.c.user_id))
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)))).first()
    return dict(row._mapping) if row else None


async def list_api_keys(conn: AsyncConnection, org_id: str, user_id: str | None) -> list[dict[str, Any]]:
    """An org's API keys that are not revoked, newest first; only one user's when user_id is given."""
    query = select(api_keys).where(api_keys.c.org_id == org_id, api_keys.c.revoked_at.is_(None))
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    rows = await conn.execute(query.order_by(api_keys.c.created_at.desc()))
    return [dict(r._mapping) for r in rows]


async def api_key_in_org(conn: AsyncConnection, org_id: str, key_id: str) -> dict[str, Any] | None:
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


async def list_orgs(conn: AsyncConnection) -> list[OrgRow]:
    """Every org, by slug, with its member count."""
    members = (select(memberships.c.org_id, func.count().label("members"))
               .group_by(memberships.c.org_id).subquery())
    rows = await conn.execute(
        select(orgs.c.id, orgs.c.slug, orgs.c.name, orgs.c.balance_microcents, orgs.c.created_at,
               func.coalesce(members.c.members, 0).label("members"))
        .outerjoin(members, members.c.org_id == orgs.c.id).order_by(orgs.c.slug))
    return [OrgRow(id=r.id, slug=r.slug, name=r.name, balance_microcents=r.balance_microcents,
                   members=r.members, created_at=r.created_at) for r in rows]


_API_KEY_ROW = (select(api_keys.c.id, api_keys.c.org_id, orgs.c.slug.label("org_slug"),
                       users.c.email.label("user_email"), api_keys.c.name, api_keys.c.prefix,
                       api_keys.c.scopes, api_keys.c.created_at, api_keys.c.last_used_at,
                       api_keys.c.revoked_at)
                .join(orgs, orgs.c.id == api_keys.c.org_id).join(users, users.c.id == api_keys.c.user_id))


def _api_key_row(m: RowMapping) -> ApiKeyRow:
    return ApiKeyRow(id=m["id"], org_id=m["org_id"], org_slug=m["org_slug"], user_email=m["user_email"],
                     name=m["name"], prefix=m["prefix"], scopes=tuple(m["scopes"].split()),
                     created_at=m["created_at"], last_used_at=m["last_used_at"], revoked_at=m["revoked_at"])


async def api_key_rows(conn: AsyncConnection, org_id: str, *, include_revoked: bool) -> list[ApiKeyRow]:
    """An org's API keys with their users' emails, newest first; revoked ones only when asked."""
    query = _API_KEY_ROW.where(api_keys.c.org_id == org_id)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    rows = await conn.execute(query.order_by(api_keys.c.created_at.desc(), api_keys.c.id))
    return [_api_key_row(r._mapping) for r in rows]


async def api_key_row(conn: AsyncConnection, key_id: str) -> ApiKeyRow | None:
    """Any org's API key by id."""
    row = (await conn.execute(_API_KEY_ROW.where(api_keys.c.id == key_id))).first()
    return _api_key_row(row._mapping) if row else None

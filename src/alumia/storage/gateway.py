"""The one read of the hot path, made before the request body is read: who is calling, their balance,
every active BYOK key of their org, and the agent the call is made for."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Row, Select, and_, bindparam, literal, null, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import agents, api_keys, byok_keys, orgs


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """One active BYOK key of the calling org (at most one per provider)."""

    id: str
    provider: str
    ciphertext: bytes
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class CallContext:
    """Everything routing and the balance check need, read in one round trip.

    The org's active keys are all read (at most one per provider, so a handful) because the model, and
    so the provider, is in the body, and the caller is authenticated before the body is read.

    A context may be served from a process's cache (services/context_cache.py) for as long as the cache
    generation does not move, which every change to the caller's key, the org's BYOK keys, the agent,
    or the org's slug, deposits and auto top-up settings makes it do. `balance_microcents` and
    `held_microcents` move on every call without bumping it: they are as of the read, possibly long
    ago, and are not used for admission (the reservation statement alone decides). Likewise
    `api_key_last_used_at` and each key's `last_used_at` are as of the read.
    """

    api_key_id: str | None
    api_key_last_used_at: datetime | None
    scopes: str
    org_id: str
    org_slug: str
    balance_microcents: int
    held_microcents: int
    cumulative_deposits_cents: int
    agent_id: str | None
    agent_active: bool | None
    auto_topup_enabled: bool
    auto_topup_threshold_cents: int
    active_keys: tuple[ActiveKey, ...]

    def key_for(self, provider: str) -> ActiveKey | None:
        """The org's active BYOK key for `provider`, if it has one."""
        return next((key for key in self.active_keys if key.provider == provider), None)


def _context(caller_columns: tuple[ColumnElement[Any], ...], base: FromClause,
             where: ColumnElement[bool]) -> Select[*tuple[Any, ...]]:
    return (
        select(*caller_columns, orgs.c.id, orgs.c.slug, orgs.c.balance_microcents, orgs.c.held_microcents,
               orgs.c.cumulative_deposits_cents, agents.c.id, agents.c.is_active, orgs.c.auto_topup_enabled,
               orgs.c.auto_topup_threshold_cents, byok_keys.c.id, byok_keys.c.provider,
               byok_keys.c.ciphertext, byok_keys.c.last_used_at)
        .select_from(base)
        .outerjoin(byok_keys, and_(byok_keys.c.org_id == orgs.c.id, byok_keys.c.status == "active"))
        .outerjoin(agents, and_(agents.c.org_id == orgs.c.id, agents.c.deleted_at.is_(None),
                                or_(agents.c.id == bindparam("agent"), agents.c.slug == bindparam("agent"))))
        .where(where)
    )


_BY_KEY = _context((api_keys.c.id, api_keys.c.last_used_at, api_keys.c.scopes),
                   api_keys.join(orgs, orgs.c.id == api_keys.c.org_id),
                   and_(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)))
# A signed-in person (the lab) calls as the org itself: no API key, model calls allowed.
_BY_ORG = _context((null(), null(), literal("gateway")), orgs, orgs.c.id == bindparam("org_id"))
_CALLER_COLUMNS = 12  # the columns before the key's four


def _from_rows(rows: Sequence[Row[*tuple[Any, ...]]]) -> CallContext | None:
    """One context from the rows of the join: the caller's columns repeat, one row per active key."""
    if not rows:
        return None
    keys: dict[str, ActiveKey] = {}
    for row in rows:
        key_id, provider, ciphertext, last_used_at = row[_CALLER_COLUMNS:]
        if key_id is not None:
            keys[key_id] = ActiveKey(key_id, provider, ciphertext, last_used_at)
    # The caller's columns are the context's fields in order, active_keys after them. One list, as mypy
    # takes a star-unpacked tuple of unknown length for every field, leaving no room for active_keys.
    return CallContext(*[*rows[0][:_CALLER_COLUMNS], tuple(keys.values())])


async def call_context(conn: AsyncConnection, key_hash: str, agent: str | None = None) -> CallContext | None:
    """The context of a call made with an API key, or None for an unknown or revoked key."""
    result = await conn.execute(_BY_KEY, {"key_hash": key_hash, "agent": agent or ""})
    return _from_rows(result.all())


async def org_call_context(conn: AsyncConnection, org_id: str,
                           agent: str | None = None) -> CallContext | None:
    """The context of a call made for an org by one of its signed-in members."""
    result = await conn.execute(_BY_ORG, {"org_id": org_id, "agent": agent or ""})
    return _from_rows(result.all())

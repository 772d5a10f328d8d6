"""The one read of the hot path: who is calling, their balance, their active key for the provider, and
the agent the call is made for."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, literal, null, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import agents, api_keys, byok_keys, orgs


@dataclass(frozen=True, slots=True)
class CallContext:
    """Everything routing and the balance check need, read in one round trip."""

    api_key_id: str | None
    api_key_last_used_at: datetime | None
    scopes: str
    org_id: str
    org_slug: str
    balance_microcents: int
    held_microcents: int
    cumulative_deposits_cents: int
    byok_key_id: str | None
    byok_ciphertext: bytes | None
    byok_last_used_at: datetime | None
    agent_id: str | None
    agent_active: bool | None
    auto_topup_enabled: bool = False
    auto_topup_threshold_cents: int = 0


def _context(caller_columns: tuple, base: object, where: object) -> object:
    return (
        select(*caller_columns, orgs.c.id, orgs.c.slug, orgs.c.balance_microcents, orgs.c.held_microcents,
               orgs.c.cumulative_deposits_cents, byok_keys.c.id, byok_keys.c.ciphertext,
               byok_keys.c.last_used_at, agents.c.id, agents.c.is_active, orgs.c.auto_topup_enabled,
               orgs.c.auto_topup_threshold_cents)
        .select_from(base)
        .outerjoin(byok_keys, and_(byok_keys.c.org_id == orgs.c.id,
                                   byok_keys.c.provider == bindparam("provider"),
                                   byok_keys.c.status == "active"))
        .outerjoin(agents, and_(agents.c.org_id == orgs.c.id, agents.c.deleted_at.is_(None),
                                or_(agents.c.id == bindparam("agent"), agents.c.slug == bindparam("agent"))))
        .where(where)
    )


_BY_KEY = _context((api_keys.c.id, api_keys.c.last_used_at, api_keys.c.scopes),
                   api_keys.join(orgs, orgs.c.id == api_keys.c.org_id),
                   and_(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)))
# A signed-in person (the lab) calls as the org itself: no API key, model calls allowed.
_BY_ORG = _context((null(), null(), literal("gateway")), orgs, orgs.c.id == bindparam("org_id"))


async def call_context(conn: AsyncConnection, key_hash: str, provider: str,
                       agent: str | None = None) -> CallContext | None:
    """The context of a call made with an API key, or None for an unknown or revoked key."""
    row = (await conn.execute(_BY_KEY, {"key_hash": key_hash, "provider": provider,
                                        "agent": agent or ""})).first()
    return CallContext(*row) if row else None


async def org_call_context(conn: AsyncConnection, org_id: str, provider: str,
                           agent: str | None = None) -> CallContext | None:
    """The context of a call made for an org by one of its signed-in members."""
    params = {"org_id": org_id, "provider": provider, "agent": agent or ""}
    row = (await conn.execute(_BY_ORG, params)).first()
    return CallContext(*row) if row else None

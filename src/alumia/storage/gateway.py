"""The one read of the hot path: who is calling, their balance, and their active key for a provider."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import api_keys, byok_keys, orgs


@dataclass(frozen=True, slots=True)
class CallContext:
    """Everything routing and the balance check need, read in one round trip."""

    api_key_id: str
    api_key_last_used_at: datetime | None
    scopes: str
    org_id: str
    org_slug: str
    balance_microcents: int
    cumulative_deposits_cents: int
    byok_key_id: str | None
    byok_ciphertext: bytes | None
    byok_last_used_at: datetime | None


_CALL_CONTEXT = (
    select(api_keys.c.id, api_keys.c.last_used_at, api_keys.c.scopes, orgs.c.id, orgs.c.slug,
           orgs.c.balance_microcents, orgs.c.cumulative_deposits_cents, byok_keys.c.id,
           byok_keys.c.ciphertext, byok_keys.c.last_used_at)
    .select_from(api_keys)
    .join(orgs, orgs.c.id == api_keys.c.org_id)
    .outerjoin(byok_keys, and_(byok_keys.c.org_id == api_keys.c.org_id,
                               byok_keys.c.provider == bindparam("provider"),
                               byok_keys.c.status == "active"))
    .where(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None))
)


async def call_context(conn: AsyncConnection, key_hash: str, provider: str) -> CallContext | None:
    """The caller's context for one call to `provider`, or None for an unknown or revoked key."""
    row = (await conn.execute(_CALL_CONTEXT, {"key_hash": key_hash, "provider": provider})).first()
    return CallContext(*row) if row else None

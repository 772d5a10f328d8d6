"""Adding, listing and deactivating an org's BYOK keys."""

from alumia.clock import iso, new_id, utcnow
from alumia.domain.catalog import PROVIDER_NAMES
from alumia.errors import AppError
from alumia.services.accounts import Principal
from alumia.storage import byok
from alumia.storage.db import Database
from alumia.vault.masking import mask_key
from alumia.vault.runtime import Vault

MAX_KEY_LENGTH = 512


def key_json(row: dict) -> dict:
    """A key record as the API shows it: never the key, only its mask."""
    return {
        "id": row["id"],
        "provider": row["provider"],
        "maskedKey": row["masked_key"],
        "status": row["status"],
        "createdAt": iso(row["created_at"]),
        "createdBy": row.get("created_by_email"),
        "deactivatedAt": iso(row["deactivated_at"]),
        "lastUsedAt": iso(row["last_used_at"]),
    }


def check_provider(provider: object) -> str:
    """The provider name, or VALIDATION_ERROR listing the valid ones."""
    if provider is None:
        raise AppError("VALIDATION_ERROR", "provider is required")
    if not isinstance(provider, str) or provider not in PROVIDER_NAMES:
        raise AppError("VALIDATION_ERROR", f"provider must be one of: {', '.join(PROVIDER_NAMES)}")
    return provider


def clean_api_key(api_key: object) -> str:
    """The key without surrounding whitespace; refused (never echoed) unless printable ASCII, 1–512 chars."""
    if api_key is None:
        raise AppError("VALIDATION_ERROR", "apiKey is required")
    if not isinstance(api_key, str):
        raise AppError("VALIDATION_ERROR", "apiKey must be a string")
    key = api_key.strip()
    if not key:
        raise AppError("VALIDATION_ERROR", "apiKey must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise AppError("VALIDATION_ERROR", f"apiKey must be at most {MAX_KEY_LENGTH} characters")
    if not all("!" <= ch <= "~" for ch in key):
        raise AppError("VALIDATION_ERROR",
                       "apiKey must be printable ASCII without spaces or control characters")
    return key


def _require_billing_manage(principal: Principal) -> None:
    if not principal.can_manage_billing:
        raise AppError("FORBIDDEN", "managing BYOK keys needs the billing-manage permission (owner or admin)")


async def add_key(db: Database, vault: Vault, principal: Principal, *, provider: object,
                  api_key: object) -> dict:
    """Store a key for a provider; an active key for that provider is replaced in the same transaction."""
    _require_billing_manage(principal)
    provider = check_provider(provider)
    key = clean_api_key(api_key)
    record_id = new_id()
    masked = mask_key(key)
    blob, version = vault.seal(key, org_id=principal.org_id, record_id=record_id, provider=provider)
    now = utcnow()
    async with db.write() as conn:
        previous = await byok.active_key_for_provider(conn, principal.org_id, provider)
        if previous is not None:
            await byok.deactivate(conn, previous["id"], now)
            await byok.insert_audit(conn, org_id=principal.org_id, actor_user_id=principal.user_id,
                                    action="byok_key.replaced", target_id=previous["id"],
                                    provider=provider, masked_key=previous["masked_key"], now=now)
        await byok.insert_key(conn, key_id=record_id, org_id=principal.org_id, provider=provider,
                              ciphertext=blob, kek_version=version, masked_key=masked,
                              created_by=principal.user_id, now=now)
        await byok.insert_audit(conn, org_id=principal.org_id, actor_user_id=principal.user_id,
                                action="byok_key.added", target_id=record_id, provider=provider,
                                masked_key=masked, now=now)
        row = await byok.key_in_org(conn, principal.org_id, record_id)
    assert row is not None
    return key_json(row)


async def list_keys(db: Database, principal: Principal) -> list[dict]:
    """Every key record of the org, active and inactive."""
    async with db.read() as conn:
        return [key_json(r) for r in await byok.list_keys(conn, principal.org_id)]


async def deactivate_key(db: Database, principal: Principal, key_id: str) -> dict:
    """Deactivate one of the org's keys; deactivating an inactive key changes nothing."""
    _require_billing_manage(principal)
    now = utcnow()
    async with db.write() as conn:
        row = await byok.key_in_org(conn, principal.org_id, key_id)
        if row is None:
            raise AppError("NOT_FOUND", "no such BYOK key in this org")
        if await byok.deactivate(conn, key_id, now):
            await byok.insert_audit(conn, org_id=principal.org_id, actor_user_id=principal.user_id,
                                    action="byok_key.deactivated", target_id=key_id,
                                    provider=row["provider"], masked_key=row["masked_key"], now=now)
            row = await byok.key_in_org(conn, principal.org_id, key_id)
    assert row is not None
    return key_json(row)

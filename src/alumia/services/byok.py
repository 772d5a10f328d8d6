"""Adding, listing and deactivating an org's BYOK keys."""

from typing import Any

from alumia.clock import iso, new_id, utcnow
from alumia.container import Services
from alumia.domain.catalog import PROVIDER_NAMES
from alumia.domain.permissions import Permission
from alumia.errors import AppError, ErrorCode
from alumia.services.accounts import Principal
from alumia.services.key_check import check_key
from alumia.storage import byok
from alumia.storage.db import Database
from alumia.vault.masking import mask_key

MAX_KEY_LENGTH = 512


_WARNINGS = {
    "restricted": "{provider} accepted this key but refused it access (HTTP 403): calls may fail until "
                  "the key is given access to the models you use.",
    "unverified": "{provider} could not be asked whether this key works; it is stored and will be used, "
                  "and a rejection will show on the first call.",
}


def key_json(row: dict[str, Any]) -> dict[str, Any]:
    """A key record as the API shows it: never the key, only its mask."""
    return {
        "id": row["id"],
        "provider": row["provider"],
        "maskedKey": row["masked_key"],
        "status": row["status"],
        "verification": row["verification"],
        "lastVerifiedAt": iso(row["last_verified_at"]),
        "createdAt": iso(row["created_at"]),
        "createdBy": row.get("created_by_email"),
        "deactivatedAt": iso(row["deactivated_at"]),
        "lastUsedAt": iso(row["last_used_at"]),
    }


def check_provider(provider: object) -> str:
    """The provider name, or VALIDATION_ERROR listing the valid ones."""
    if provider is None:
        raise AppError(ErrorCode.VALIDATION_ERROR, "provider is required")
    if not isinstance(provider, str) or provider not in PROVIDER_NAMES:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"provider must be one of: {', '.join(PROVIDER_NAMES)}")
    return provider


def clean_api_key(api_key: object) -> str:
    """The key without surrounding whitespace; refused (never echoed) unless printable ASCII, 1–512 chars."""
    if api_key is None:
        raise AppError(ErrorCode.VALIDATION_ERROR, "apiKey is required")
    if not isinstance(api_key, str):
        raise AppError(ErrorCode.VALIDATION_ERROR, "apiKey must be a string")
    key = api_key.strip()
    if not key:
        raise AppError(ErrorCode.VALIDATION_ERROR, "apiKey must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"apiKey must be at most {MAX_KEY_LENGTH} characters")
    if not all("!" <= ch <= "~" for ch in key):
        raise AppError(ErrorCode.VALIDATION_ERROR,
                       "apiKey must be printable ASCII without spaces or control characters")
    return key


async def add_key(gw: Services, principal: Principal, *, provider: object, api_key: object) -> dict[str, Any]:
    """Ask the provider about the key, then store it, replacing the provider's active key in one transaction.

    A key the provider rejects is refused and nothing is stored; a restricted or unverifiable key is
    stored with a warning.
    """
    principal.require(Permission.MANAGE_BILLING, "managing BYOK keys")
    provider = check_provider(provider)
    key = clean_api_key(api_key)
    base_url = gw.settings.base_urls.get(provider, gw.catalog.providers[provider].base_url)
    check = await check_key(gw.http, gw.adapters[provider], provider, base_url, key,
                            gw.settings.key_check_timeout_seconds)
    if check.verification == "rejected":
        raise AppError(ErrorCode.BYOK_KEY_REJECTED,
                       f"{provider} rejected this API key (HTTP {check.status}: {check.message}). Check that "
                       f"you copied the whole key from your {provider} console. Nothing was stored.",
                       status=422)
    db, vault = gw.db, gw.vault
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
                              created_by=principal.user_id, verification=check.verification, now=now)
        await byok.insert_audit(conn, org_id=principal.org_id, actor_user_id=principal.user_id,
                                action="byok_key.added", target_id=record_id, provider=provider,
                                masked_key=masked, now=now)
        row = await byok.key_in_org(conn, principal.org_id, record_id)
    assert row is not None
    result = key_json(row)
    if warning := _WARNINGS.get(check.verification):
        result["warning"] = warning.format(provider=provider)
    return result


async def list_keys(db: Database, principal: Principal) -> list[dict[str, Any]]:
    """Every key record of the org, active and inactive."""
    async with db.read() as conn:
        return [key_json(r) for r in await byok.list_keys(conn, principal.org_id)]


async def deactivate_key(db: Database, principal: Principal, key_id: str) -> dict[str, Any]:
    """Deactivate one of the org's keys; deactivating an inactive key changes nothing."""
    principal.require(Permission.MANAGE_BILLING, "managing BYOK keys")
    now = utcnow()
    async with db.write() as conn:
        row = await byok.key_in_org(conn, principal.org_id, key_id)
        if row is None:
            raise AppError(ErrorCode.NOT_FOUND, "no such BYOK key in this org")
        if await byok.deactivate(conn, key_id, now):
            await byok.insert_audit(conn, org_id=principal.org_id, actor_user_id=principal.user_id,
                                    action="byok_key.deactivated", target_id=key_id,
                                    provider=row["provider"], masked_key=row["masked_key"], now=now)
            row = await byok.key_in_org(conn, principal.org_id, key_id)
    assert row is not None
    return key_json(row)

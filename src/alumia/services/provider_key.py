"""The provider key that pays for a call to a provider: the org's BYOK key or the platform's."""

from alumia.container import Services
from alumia.errors import AppError, ErrorCode
from alumia.storage.gateway import ActiveKey, CallContext
from alumia.vault.envelope import CredentialUnavailable


def provider_key(gw: Services, ctx: CallContext, provider: str, byok: ActiveKey | None) -> str:
    """The org's key when `byok` (decrypted once per key record, then cached), else the platform's.

    The route decision comes first (domain/routing.py): `byok` is the org's active key when the route
    is byok, None when the platform key pays.
    """
    if byok is None:
        return gw.settings.platform_keys[provider].get_secret_value()
    try:
        return gw.vault.plaintext(byok.ciphertext, org_id=ctx.org_id, record_id=byok.id, provider=provider)
    except CredentialUnavailable as exc:
        raise AppError(ErrorCode.BYOK_KEY_UNAVAILABLE,
                       f"your org's {provider} BYOK key can no longer be read and needs to be "
                       f"re-added in Billing: /{ctx.org_slug}/billing", status=409) from exc

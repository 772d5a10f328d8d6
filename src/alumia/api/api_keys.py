"""/api/v1/api-keys: an org's API keys, listed by prefix, shown whole once, revocable."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from alumia.api.deps import JsonBody, PrincipalDep, ServicesDep
from alumia.api.envelope import ok
from alumia.errors import AppError, ErrorCode
from alumia.services import accounts

router = APIRouter(prefix="/api/v1/api-keys")


@router.get("")
async def list_keys(gw: ServicesDep, who: PrincipalDep) -> JSONResponse:
    """Owners and admins see every key of the org; members see their own."""
    return ok({"items": await accounts.list_api_keys(gw.db, who)})


@router.post("")
async def create_key(gw: ServicesDep, who: PrincipalDep, body: JsonBody) -> JSONResponse:
    """A new key for the caller; the answer carries `key` this once."""
    name = body.get("name", "api")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        raise AppError(ErrorCode.VALIDATION_ERROR, "name must be 1-200 characters")
    return ok(await accounts.create_api_key(gw.db, gw.settings, org_id=who.org_id, user_id=who.user_id,
                                            name=name.strip()), 201)


@router.delete("/{key_id}")
async def revoke_key(gw: ServicesDep, who: PrincipalDep, key_id: str) -> JSONResponse:
    """Revoke a key: one's own, or any of the org's with billing-manage."""
    return ok(await accounts.revoke_api_key(gw.db, who, key_id))

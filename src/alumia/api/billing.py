"""/api/v1/billing: snapshot, auto top-up, pricing, transactions, deposits, BYOK keys. Handlers stay thin."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from alumia.api.deps import JsonBody, PrincipalDep, ServicesDep
from alumia.api.envelope import ok
from alumia.domain.permissions import Permission
from alumia.errors import AppError, ErrorCode
from alumia.services import auto_topup, billing, byok, payments

router = APIRouter(prefix="/api/v1/billing")


@router.get("")
async def get_billing(gw: ServicesDep, who: PrincipalDep) -> JSONResponse:
    """The billing snapshot."""
    return ok(await billing.snapshot(gw.db, gw.settings, who))


@router.patch("")
async def patch_billing(gw: ServicesDep, who: PrincipalDep, body: JsonBody) -> JSONResponse:
    """Auto top-up settings (billing-manage); answers with the snapshot's `balance` block."""
    return ok(await auto_topup.update_settings(gw.db, gw.settings, who, body))


@router.get("/pricing")
async def get_pricing(gw: ServicesDep, _who: PrincipalDep) -> JSONResponse:
    """Per-model prices, with and without the platform fee."""
    return ok(billing.pricing(gw.catalog, gw.settings))


@router.get("/transactions")
async def get_transactions(gw: ServicesDep, who: PrincipalDep,
                           limit: Annotated[int, Query(ge=1, le=100)] = 50,
                           cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> JSONResponse:
    """Ledger entries, newest first."""
    return ok(await billing.transactions(gw.db, who, cursor=cursor, limit=limit))


@router.post("/deposit")
async def post_deposit(gw: ServicesDep, who: PrincipalDep, body: JsonBody,
                       idempotency_key: Annotated[str | None, Header()] = None) -> JSONResponse:
    """A Stripe Checkout deposit when Stripe is configured, else a direct one (non-production).

    The Idempotency-Key header makes retries safe either way.
    """
    who.require(Permission.MANAGE_BILLING, "depositing")  # before the body is looked at
    amount = body.get("amountCents")
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise AppError(ErrorCode.VALIDATION_ERROR, "amountCents must be an integer number of cents")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 100:
        raise AppError(ErrorCode.VALIDATION_ERROR, "Idempotency-Key must be 1-100 characters")
    if gw.stripe is not None:
        return ok(await payments.start_checkout(gw.db, gw.settings, gw.stripe, who, amount_cents=amount,
                                                idempotency_key=idempotency_key), 201)
    # A replay with the same key and amount answers what the first call answered (201, same body); the
    # same key with another amount is 409.
    result = await billing.deposit_direct_replayable(gw.db, gw.settings, org_id=who.org_id,
                                                     amount_cents=amount,
                                                     idempotency_key=idempotency_key or str(uuid.uuid4()))
    return ok(result.body, 201)


@router.get("/deposits")
async def get_deposits(gw: ServicesDep, who: PrincipalDep,
                       page: Annotated[int, Query(ge=1, le=10_000)] = 1,
                       limit: Annotated[int, Query(ge=1, le=100)] = 50) -> JSONResponse:
    """Stripe deposits (Checkout and auto top-up) with their status, newest first."""
    return ok(await payments.list_deposits(gw.db, who, page=page, limit=limit))


@router.get("/byok-keys")
async def get_byok_keys(gw: ServicesDep, who: PrincipalDep) -> JSONResponse:
    """The org's BYOK keys, masked."""
    return ok({"items": await byok.list_keys(gw.db, who)})


@router.post("/byok-keys")
async def post_byok_key(gw: ServicesDep, who: PrincipalDep, body: JsonBody) -> JSONResponse:
    """Add a key; it replaces the provider's active key if there is one."""
    return ok(await byok.add_key(gw, who, provider=body.get("provider"), api_key=body.get("apiKey")), 201)


@router.delete("/byok-keys/{key_id}")
async def delete_byok_key(gw: ServicesDep, who: PrincipalDep, key_id: str) -> JSONResponse:
    """Deactivate a key; the record stays."""
    return ok(await byok.deactivate_key(gw.db, who, key_id))

"""POST /api/v1/billing/webhooks/stripe: Stripe's deliveries. No API key; the signature is the auth."""

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from alumia.api.deps import GatewayDep
from alumia.api.envelope import ok
from alumia.errors import AppError
from alumia.services import payments

router = APIRouter(prefix="/api/v1/billing/webhooks")

MAX_EVENT_BYTES = 1 << 20  # Stripe events are a few KB; anything near this is not one


@router.post("/stripe")
async def post_stripe_webhook(request: Request, gw: GatewayDep,
                              stripe_signature: Annotated[str | None, Header()] = None) -> JSONResponse:
    """Verify the signature over the raw body, then record and apply the event once."""
    raw = await request.body()
    if len(raw) > MAX_EVENT_BYTES:
        raise AppError("PAYLOAD_TOO_LARGE", "webhook body too large")
    result = await payments.receive_webhook(gw.db, gw.settings, raw, stripe_signature)
    return ok(result.json())

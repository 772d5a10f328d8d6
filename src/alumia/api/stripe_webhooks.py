"""POST /api/v1/billing/webhooks/stripe: Stripe's deliveries. No API key; the signature is the auth."""

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from alumia.api.deps import ServicesDep
from alumia.api.envelope import ok
from alumia.services import payments

router = APIRouter(prefix="/api/v1/billing/webhooks")


@router.post("/stripe")
async def post_stripe_webhook(request: Request, gw: ServicesDep,
                              stripe_signature: Annotated[str | None, Header()] = None) -> JSONResponse:
    """Verify the signature over the raw body, then record and apply the event once.

    The body is read before anything is known of its sender, so HttpLimits gives it the webhook's small
    limit and the read timeout.
    """
    raw = await request.body()
    result = await payments.receive_webhook(gw.db, gw.settings, raw, stripe_signature)
    return ok(result.json())

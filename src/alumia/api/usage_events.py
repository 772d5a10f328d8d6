"""POST /api/v1/billing/usage-events: infrastructure meter events (billing:meter keys). Thin handler."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from alumia.api.deps import AnyPrincipalDep, JsonBody, ServicesDep
from alumia.api.envelope import ok
from alumia.services import meters

router = APIRouter(prefix="/api/v1/billing")


@router.post("/usage-events")
async def post_usage_event(gw: ServicesDep, who: AnyPrincipalDep, body: JsonBody) -> JSONResponse:
    """Charge one usage event: 201 when new, 200 with the original result for a repeated id.

    Any key reaches the service, which admits only keys holding the billing:meter scope.
    """
    result, status = await meters.record_event(gw.db, gw.settings, who, body, gw.auto_topup)
    return ok(result, status)

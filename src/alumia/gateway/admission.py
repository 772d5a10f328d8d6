"""Who is calling, as every model-call door reads it from the request, then admitted.

The doors differ in where the alm_ key may come (the Anthropic SDK sends x-api-key); the rest is one
step: the key and the X-Alumia-Agent header, checked by `services.proxy.admit` before any body is read.
"""

from starlette.requests import Request

from alumia.bearer import bearer_token
from alumia.container import Services
from alumia.services.proxy import Caller, admit
from alumia.storage.gateway import CallContext


async def admit_request(gw: Services, request: Request, *, x_api_key: bool = False) -> CallContext:
    """The caller's context, or the AppError that refuses it; `x_api_key` also reads that header."""
    bearer = bearer_token(request.headers)
    if x_api_key:
        bearer = request.headers.get("x-api-key") or bearer
    return await admit(gw, Caller(bearer=bearer, agent=request.headers.get("x-alumia-agent")))

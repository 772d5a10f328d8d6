"""Request-scoped dependencies of the management API."""

from typing import Annotated, Any

from fastapi import Depends, Request

from alumia.bearer import bearer_token
from alumia.container import Services, services_of
from alumia.errors import AppError, ErrorCode
from alumia.json_body import json_object as parse_json_object
from alumia.services.accounts import Principal, authenticate


def services(request: Request) -> Services:
    """The app's wired services."""
    return services_of(request)


async def any_principal(request: Request) -> Principal:
    """The org, user and role behind the request's `Authorization: Bearer alm_...`, whatever its scopes."""
    gw = services_of(request)
    return await authenticate(gw.db, bearer_token(request.headers), production=gw.settings.is_production)


AnyPrincipalDep = Annotated[Principal, Depends(any_principal)]


async def principal(who: AnyPrincipalDep) -> Principal:
    """As `any_principal`, for the management API: the key must hold the `management` scope."""
    if "management" not in who.scopes:
        raise AppError(ErrorCode.FORBIDDEN, "this API key may not use the management API")
    return who


async def json_object(request: Request, _who: AnyPrincipalDep) -> dict[str, Any]:
    """The request body as a JSON object, parsed by hand so that no error can echo it back.

    It depends on the caller's key, so that whatever the order of a handler's parameters, a stranger is
    refused before the body is read (FastAPI resolves a dependency once per request).
    """
    return parse_json_object(await request.body())


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
JsonBody = Annotated[dict[str, Any], Depends(json_object)]

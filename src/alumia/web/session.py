"""The dashboard's session cookie, CSRF check and the member dependency every org page uses."""

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from alumia.container import services_of
from alumia.errors import AppError, ErrorCode
from alumia.services.accounts import Principal
from alumia.services.sessions import SESSION_LIFETIME, SessionUser, session_user

DEV_COOKIE = "alumia_session"
# In production the __Host- prefix pins the cookie to this host, over HTTPS, for path /.
PRODUCTION_COOKIE = "__Host-alumia_session"


class NotSignedIn(Exception):
    """The page needs a signed-in person; the app redirects to /login."""


def cookie_name(request: Request) -> str:
    """The session cookie's name for this deployment."""
    return PRODUCTION_COOKIE if services_of(request).settings.is_production else DEV_COOKIE


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    """HttpOnly and SameSite=Lax always; Secure (and __Host-) in production."""
    response.set_cookie(cookie_name(request), token, max_age=int(SESSION_LIFETIME.total_seconds()),
                        path="/", httponly=True, samesite="lax",
                        secure=services_of(request).settings.is_production)


def clear_session_cookie(request: Request, response: Response) -> None:
    """Forget the session cookie in the browser."""
    response.delete_cookie(cookie_name(request), path="/")


async def signed_in(request: Request) -> SessionUser | None:
    """The person behind the request's session cookie, or None."""
    return await session_user(services_of(request).db, request.cookies.get(cookie_name(request)))


@dataclass(frozen=True, slots=True)
class Member:
    """A signed-in person looking at one of their orgs."""

    user: SessionUser
    principal: Principal


async def member(request: Request) -> Member:
    """The signed-in member for /{org_slug}/...; a non-member gets 404, as if the org did not exist."""
    user = await signed_in(request)
    if user is None:
        raise NotSignedIn()
    principal = user.principal(request.path_params["org_slug"])
    if principal is None:
        raise AppError(ErrorCode.NOT_FOUND, "page not found")
    return Member(user=user, principal=principal)


def same_origin(request: Request) -> bool:
    """The request's Origin (or, without one, its Referer) is this site."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return False
    parts = urlsplit(source)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


def check_csrf(request: Request, user: SessionUser, submitted: str | None) -> None:
    """Every state-changing request: same origin and the session's CSRF token, else 403."""
    if not same_origin(request) or not submitted or not hmac.compare_digest(submitted, user.csrf_token):
        raise AppError(ErrorCode.FORBIDDEN,
                       "this form has expired or did not come from this site; reload and retry")

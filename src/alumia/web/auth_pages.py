"""/login, /logout and /: signing in and out of the dashboard."""

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from alumia.container import services_of
from alumia.errors import AppError, ErrorCode
from alumia.services import sessions
from alumia.web.session import (
    check_csrf,
    clear_session_cookie,
    cookie_name,
    same_origin,
    set_session_cookie,
    signed_in,
)
from alumia.web.templating import render

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "alumia_login_csrf"  # double-submit token: there is no session yet to hold one


def _login_page(request: Request, error: str | None = None, email: str | None = None,
                status: int = 200) -> Response:
    token = secrets.token_hex(32)
    response = render(request, "login.html", {"csrf_token": token, "error": error, "email": email}, status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="lax", path="/login",
                        secure=services_of(request).settings.is_production)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    """The sign-in form."""
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the form, start a session, go to the first org's billing page."""
    form = await request.form()
    submitted, expected = str(form.get("csrf_token", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not same_origin(request) or not expected or not hmac.compare_digest(submitted, expected):
        raise AppError(ErrorCode.FORBIDDEN,
                       "this form has expired or did not come from this site; reload and retry")
    email = str(form.get("email", ""))
    state = request.app.state
    try:
        token = await sessions.sign_in(state.services.db, state.passwords, state.sign_in_guard, email=email,
                                       password=str(form.get("password", "")),
                                       client_host=request.client.host if request.client else "")
    except AppError as error:  # a wrong password (401), or throttled (429 with Retry-After)
        response = _login_page(request, error.message, email, error.status)
        response.headers.update(error.headers)
        return response
    user = await sessions.session_user(services_of(request).db, token)
    assert user is not None
    target = f"/{user.orgs[0]['slug']}/billing" if user.orgs else "/"
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (a CSRF-checked POST: GET never changes anything)."""
    user = await signed_in(request)
    if user is not None:
        form = await request.form()
        check_csrf(request, user, str(form.get("csrf_token", "")))
        await sessions.sign_out(services_of(request).db, request.cookies.get(cookie_name(request)))
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(request, response)
    return response


@router.get("/")
async def home(request: Request) -> Response:
    """The first org's billing page, or sign-in."""
    user = await signed_in(request)
    if user is None or not user.orgs:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(f"/{user.orgs[0]['slug']}/billing", status_code=303)

"""/{org_slug}/billing: the figures, the daily spend chart, transactions, deposits and the BYOK keys.

Handlers stay thin: parse the form, check its CSRF token, call one service, then redirect (303) back
to the page with a notice, or render the page again with the error where it happened. A submitted
API key is never put back into a page.
"""

import asyncio
import json
import re
import uuid
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from alumia.container import services_of
from alumia.domain.catalog import PROVIDER_NAMES
from alumia.domain.money import cents_to_microcents, format_usd
from alumia.domain.permissions import Permission
from alumia.errors import AppError, ErrorCode
from alumia.services import billing, byok
from alumia.web.charts import spend_chart
from alumia.web.session import Member, check_csrf, member
from alumia.web.templating import render

router = APIRouter(include_in_schema=False)
MemberDep = Annotated[Member, Depends(member)]

TRANSACTIONS_PER_PAGE = 20
CHART_DAYS = 30
NOTICE_COOKIE = "alumia_notice"  # one notice, shown once by the page a POST redirects to
# Errors shown on the page next to the form that caused them; anything else is an error page.
_FORM_ERRORS = frozenset({"VALIDATION_ERROR", "BAD_REQUEST", "BYOK_KEY_REJECTED"})
_DOLLARS = re.compile(r"^\$?\s*(\d{1,9})(?:\.(\d{1,2}))?$")


def _text(form: FormData, name: str) -> str | None:
    """A text field of the form (an uploaded file counts as missing)."""
    value = form.get(name)
    return value if isinstance(value, str) else None


async def _checked_form(request: Request, who: Member) -> FormData:
    """The posted form, after its CSRF token and origin were checked (403 otherwise)."""
    form = await request.form()
    check_csrf(request, who.user, _text(form, "csrf_token"))
    return form


def dollars_to_cents(text: str | None) -> int:
    """'25', '$25.5' or '1,250.00' as whole cents; VALIDATION_ERROR for anything else."""
    match = _DOLLARS.match((text or "").strip().replace(",", ""))
    if not match:
        raise AppError(ErrorCode.VALIDATION_ERROR, "Enter an amount in dollars, like 25 or 25.50.")
    cents = int(match[1]) * 100 + int((match[2] or "0").ljust(2, "0"))
    if not 1 <= cents <= billing.MAX_DIRECT_DEPOSIT_CENTS:
        limit = format_usd(cents_to_microcents(billing.MAX_DIRECT_DEPOSIT_CENTS))
        raise AppError(ErrorCode.VALIDATION_ERROR, f"Enter an amount between $0.01 and {limit}.")
    return cents


def _cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdecimal() or len(value) > 18 or int(value) < 1:
        raise AppError(ErrorCode.BAD_REQUEST, "that page of transactions does not exist")
    return int(value)


# What each notice carries; a cookie that does not fit (edited by hand, or stale) shows nothing.
_NOTICE_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "deposit": {"amountMicrocents": (int,), "balanceMicrocents": (int,)},
    "deposit_repeated": {},
    "key_added": {"provider": (str,), "maskedKey": (str,), "verification": (str,),
                  "warning": (str, type(None))},
    "key_deactivated": {"provider": (str,), "maskedKey": (str,)},
}


def _read_notice(request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw:
        return None
    try:
        notice = json.loads(unquote(raw))
    except ValueError:
        return None
    if not isinstance(notice, dict):
        return None
    kind = notice.get("kind")  # the cookie is the browser's to edit: anything may be here
    fields = _NOTICE_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None or not all(isinstance(notice.get(k), t) and not isinstance(notice.get(k), bool)
                                 for k, t in fields.items()):
        return None
    return notice


def _back(request: Request, who: Member, section: str, notice: dict[str, Any]) -> RedirectResponse:
    """303 to the billing page's section, carrying a notice in a short-lived cookie for that page."""
    slug = who.principal.org_slug
    response = RedirectResponse(f"/{slug}/billing#{section}", status_code=303)
    response.set_cookie(NOTICE_COOKIE, quote(json.dumps(notice, separators=(",", ":"))), max_age=60,
                        path=f"/{slug}/billing", httponly=True, samesite="lax",
                        secure=services_of(request).settings.is_production)
    return response


async def _page(request: Request, who: Member, *, status: int = 200, cursor: int | None = None,
                open_dialog: str | None = None, notice: dict[str, Any] | None = None,
                add_key_error: str | None = None, provider: str | None = None,
                deposit_error: str | None = None, deposit_amount: str | None = None) -> Response:
    """The billing page, with whatever the last form left to say."""
    gw, principal = services_of(request), who.principal
    snapshot, days, transactions, keys = await asyncio.gather(
        billing.snapshot(gw.db, gw.settings, principal),
        billing.daily_spend(gw.db, principal, days=CHART_DAYS),
        billing.transactions(gw.db, principal, cursor=cursor, limit=TRANSACTIONS_PER_PAGE),
        byok.list_keys(gw.db, principal))
    org = next(o for o in who.user.orgs if o["slug"] == principal.org_slug)
    if add_key_error:
        open_dialog = "add-key-dialog"
    response = render(request, "billing.html", {
        "user": who.user, "org": org, "role": principal.role, "active": "billing",
        "can_manage": principal.may(Permission.MANAGE_BILLING),
        "snapshot": snapshot, "fee_percent": f"{gw.settings.fee_bps / 100:g}",
        # The snapshot counts deposits in cents; the page shows every amount from microcents.
        "deposits_microcents": cents_to_microcents(snapshot["balance"]["cumulativeDepositsCents"]),
        "waiver_remaining_microcents": cents_to_microcents(snapshot["waiver"]["remainingCents"]),
        # The same chart drawn for a laptop and for a phone (the stylesheet shows one), so its text
        # stays readable at either width without scrolling sideways.
        "chart": spend_chart(days), "chart_narrow": spend_chart(days, chart_id="spend-chart-narrow",
                                                               width=320, height=220),
        "chart_days": CHART_DAYS,
        "transactions": transactions, "cursor": cursor,
        "keys": keys, "providers": PROVIDER_NAMES,
        "open_dialog": open_dialog, "notice": notice,
        "add_key_error": add_key_error, "selected_provider": provider if provider in PROVIDER_NAMES else None,
        "deposit_error": deposit_error, "deposit_amount": deposit_amount,
        "deposit_key": str(uuid.uuid4()), "max_deposit_cents": billing.MAX_DIRECT_DEPOSIT_CENTS,
    }, status)
    # Money and a fresh deposit key: never from a cache, nor the back button's snapshot.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/{org_slug}/billing")
async def billing_page(request: Request, who: MemberDep) -> Response:
    """The billing page. `?cursor=` pages the transactions; `?dialog=` opens a dialog without JavaScript."""
    notice = _read_notice(request)
    response = await _page(request, who, cursor=_cursor(request.query_params.get("cursor")),
                           open_dialog=request.query_params.get("dialog"), notice=notice)
    if NOTICE_COOKIE in request.cookies:  # shown once
        response.delete_cookie(NOTICE_COOKIE, path=f"/{who.principal.org_slug}/billing")
    return response


@router.post("/{org_slug}/billing/deposit")
async def post_deposit(request: Request, who: MemberDep) -> Response:
    """A direct deposit in dollars; the form's idempotency key makes a double submit credit once."""
    form = await _checked_form(request, who)
    who.principal.require(Permission.MANAGE_BILLING, "depositing")  # before the amount is read
    gw, amount = services_of(request), _text(form, "amount")
    try:
        idempotency_key = str(uuid.UUID(_text(form, "idempotency_key") or ""))
    except ValueError:
        raise AppError(ErrorCode.BAD_REQUEST,
                       "this form is out of date; reload the page and try again") from None
    try:
        cents = dollars_to_cents(amount)
        result = await billing.deposit(gw.db, gw.settings, who.principal, amount_cents=cents,
                                       idempotency_key=idempotency_key)
    except AppError as error:
        if error.code == "CONFLICT":  # the same form submitted twice: it was credited the first time
            return _back(request, who, "deposit", {"kind": "deposit_repeated"})
        if error.code not in _FORM_ERRORS:
            raise
        return await _page(request, who, status=error.status, deposit_error=error.message,
                           deposit_amount=amount)
    return _back(request, who, "deposit", {"kind": "deposit", "amountMicrocents": cents_to_microcents(cents),
                                           "balanceMicrocents": result["balanceMicrocents"]})


@router.post("/{org_slug}/billing/byok-keys")
async def post_byok_key(request: Request, who: MemberDep) -> Response:
    """Add key: the provider is asked about the key, which is then stored encrypted and shown masked."""
    form = await _checked_form(request, who)
    provider = _text(form, "provider")
    try:
        key = await byok.add_key(services_of(request), who.principal, provider=provider,
                                 api_key=_text(form, "api_key"))
    except AppError as error:
        if error.code not in _FORM_ERRORS:
            raise
        # The dialog opens again with the message and the provider; the API key field stays empty.
        return await _page(request, who, status=error.status, add_key_error=error.message,
                           provider=provider)
    return _back(request, who, "byok-keys", {
        "kind": "key_added", "provider": key["provider"], "maskedKey": key["maskedKey"],
        "verification": key["verification"], "warning": key.get("warning")})


@router.post("/{org_slug}/billing/byok-keys/{key_id}/deactivate")
async def post_deactivate_key(request: Request, who: MemberDep, key_id: str) -> Response:
    """Deactivate: the provider's next request goes through the platform's account."""
    await _checked_form(request, who)
    key = await byok.deactivate_key(services_of(request).db, who.principal, key_id)
    return _back(request, who, "byok-keys", {"kind": "key_deactivated", "provider": key["provider"],
                                             "maskedKey": key["maskedKey"]})

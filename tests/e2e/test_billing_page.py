"""/<orgSlug>/billing in a real browser: the figures, the chart, transactions, deposits and BYOK keys.

The key typed into the Add key dialog is made at run time; after submitting it, it must not be in the
page, nor in any HTML or JSON response the browser received (read from Playwright's network events).
"""

import asyncio
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from conftest import SCREENSHOTS, shot, sign_in
from playwright.async_api import Browser, Locator, Page, Request, Response, expect

from alumia.clock import new_request_id
from alumia.domain.call_record import CallRecord
from alumia.domain.money import format_usd
from alumia.domain.routing import Route
from alumia.domain.usage import TokenUsage
from alumia.services import accounts, metering

from harness import Org, Server, new_org_with_login

BYOK_MODEL = "gpt-5.6-luna"  # openai: goes through the org's openai key once there is one
PLATFORM_MODEL = "claude-haiku-4-5"  # anthropic: no key in these tests, so the platform's account


def new_key(marker: str = "") -> str:
    """A fake provider key, made now; the simulator refuses keys containing "invalid"."""
    return f"sk-proj-test-{marker}" + secrets.token_hex(20)


def masked(key: str) -> str:
    return key[:7] + "…" + key[-4:]


async def signed_in_owner(web: Server, page: Page, **kwargs: int) -> Org:
    org, password = await new_org_with_login(web, **kwargs)
    await sign_in(page, web, org.owner_email, password)
    assert page.url == f"{web.base_url}/{org.slug}/billing"
    return org


def figure(page: Page, label: str) -> Locator:
    """The value of the figure with this label."""
    return page.locator(".figure").filter(has=page.locator(".label", has_text=label)).locator(".value")


async def api_keys(web: Server, org: Org) -> list[dict]:
    """The org's BYOK keys as the API lists them."""
    async with web.api(org.key) as api:
        return (await api.get("/api/v1/billing/byok-keys")).json()["data"]["items"]


async def balance_microcents(web: Server, org: Org) -> int:
    async with web.api(org.key) as api:
        return (await api.get("/api/v1/billing")).json()["data"]["balance"]["balanceMicrocents"]


async def call_model(web: Server, org: Org, model: str) -> None:
    """One gateway call with the org's API key, as an app of the org would make it."""
    async with web.api(org.key) as api:
        response = await api.post("/v1/chat/completions",
                                  json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200, response.text


async def add_key_through_dialog(page: Page, provider: str, key: str) -> Response:
    """Click Add key, fill the two fields, Submit; the answer to the POST."""
    await page.get_by_role("button", name="Add key").click()
    dialog = page.get_by_role("dialog", name="Add key")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Provider").select_option(provider)
    await dialog.get_by_label("API key").fill(key)
    async with page.expect_response(lambda r: r.request.method == "POST") as posted:
        await dialog.get_by_role("button", name="Submit").click()
    await page.wait_for_load_state("networkidle")
    return await posted.value


class Network:
    """Every request the page sent and every HTML or JSON body it received."""

    def __init__(self, page: Page) -> None:
        self.requests: list[Request] = []
        self._bodies: list[asyncio.Task[tuple[str, str]]] = []
        page.on("request", self._on_request)
        page.on("response", self._on_response)

    def _on_request(self, request: Request) -> None:
        self.requests.append(request)

    def _on_response(self, response: Response) -> None:
        kind = response.headers.get("content-type", "")
        if not 300 <= response.status < 400 and ("html" in kind or "json" in kind):
            self._bodies.append(asyncio.ensure_future(self._read(response)))

    @staticmethod
    async def _read(response: Response) -> tuple[str, str]:
        return response.url, (await response.body()).decode(errors="replace")

    async def bodies(self) -> list[tuple[str, str]]:
        return list(await asyncio.gather(*self._bodies))


async def test_a_new_org_sees_its_credit_its_waiver_and_no_byok_use_yet(web: Server, page: Page) -> None:
    network = Network(page)
    org = await signed_in_owner(web, page)
    await expect(page.get_by_role("heading", name="Billing", exact=True)).to_be_visible()
    await expect(figure(page, "Balance")).to_have_text("$10.00")
    await expect(figure(page, "Spent this month")).to_have_text("$0.00")
    await expect(figure(page, "BYOK request count")).to_have_text("0")
    await expect(figure(page, "BYOK usage value this month")).to_have_text("$0.00")
    waiver = page.locator(".figure", has_text="Platform fee")
    await expect(waiver).to_contain_text(
        "Platform fee waived — $100.00 of deposits until the 5.5% fee applies")
    await expect(page.get_by_role("heading", name="BYOK keys")).to_be_visible()
    await expect(page.get_by_text("No BYOK keys yet — calls use the platform account")).to_be_visible()
    chart = page.get_by_role("img", name="Daily spend, the last 30 days")
    await expect(chart).to_be_visible()
    await expect(chart.locator("text.empty")).to_contain_text("No spend in the last 30 days")
    await expect(chart.locator("g.day")).to_have_count(30)
    [credit] = await page.locator("#transactions tbody tr").all()
    await expect(credit).to_contain_text("Promotional credit")
    await expect(credit).to_contain_text("+$10.00")
    # Nothing on the page comes from anywhere but this server.
    await page.wait_for_load_state("networkidle")
    assert network.requests and all(r.url.startswith(web.base_url + "/") for r in network.requests)
    # Scripts come from /static only: the Content-Security-Policy refuses inline ones.
    assert not await page.locator("[src^='http'], link[href^='http'], script:not([src])").count()
    assert await page.locator("script[src^='/static/']").count()
    assert org.slug in page.url


async def test_add_key_shows_only_the_mask_and_the_key_is_in_no_response(web: Server, page: Page) -> None:
    org = await signed_in_owner(web, page)
    network = Network(page)
    key = new_key()
    await page.get_by_role("button", name="Add key").click()
    dialog = page.get_by_role("dialog", name="Add key")
    await expect(dialog).to_be_visible()
    assert await dialog.locator("input:not([type=hidden]), select, textarea").count() == 2
    api_key = dialog.get_by_label("API key")
    assert [await api_key.get_attribute(a) for a in ("type", "autocomplete", "spellcheck", "value")] == \
        ["password", "off", "false", None]
    assert await dialog.get_by_label("Provider").locator("option:not([disabled])").all_inner_texts() == [
        "anthropic", "openai", "gemini", "deepseek", "xai", "mistral", "minimax", "moonshot", "zhipu",
        "xiaomi", "nvidia", "qwen", "cerebras", "groq"]
    await dialog.get_by_label("Provider").select_option("openai")
    await api_key.fill(key)
    # The window as a person sees it (a full-page capture would draw the backdrop over one screen only).
    await page.screenshot(path=str(SCREENSHOTS / "billing-add-key-dialog.png"))
    async with page.expect_response(lambda r: r.request.method == "POST") as posted:
        await dialog.get_by_role("button", name="Submit").click()
    assert (await posted.value).status == 303
    await page.wait_for_load_state("networkidle")

    row = page.locator("#byok-keys tbody tr")
    await expect(row).to_have_count(1)
    await expect(row.locator("td").nth(0)).to_have_text("openai")
    await expect(row.locator("td").nth(1)).to_have_text(masked(key))
    await expect(row.locator(".badge")).to_have_text("active")
    await expect(row.locator("td").nth(3)).to_have_text("verified")
    await expect(row).to_contain_text(org.owner_email)
    await expect(row.locator("td").nth(5)).to_have_text("Never")
    await expect(page.get_by_role("status").first).to_contain_text(f"Added the openai key {masked(key)}")
    await expect(page.get_by_role("dialog")).to_have_count(0)
    assert await page.locator("#byok-api-key").input_value() == ""

    # The key went out once, in the form's POST body, and came back in nothing.
    [sent] = [r for r in network.requests if r.method == "POST"]
    assert key in (sent.post_data or "")
    assert key not in await page.content()
    bodies = await network.bodies()
    assert any(url.endswith(f"/{org.slug}/billing") for url, _ in bodies)
    assert not [url for url, body in bodies if key in body]
    assert key[13:-4] not in await page.content()  # not even the middle part

    # A BYOK call and a platform call: the count goes up, and the chart has both kinds of bar.
    before = await balance_microcents(web, org)
    await call_model(web, org, BYOK_MODEL)
    assert await balance_microcents(web, org) == before
    await call_model(web, org, PLATFORM_MODEL)
    await page.reload()
    await expect(figure(page, "BYOK request count")).to_have_text("1")
    await expect(page.locator(".figure", has_text="BYOK request count")).to_contain_text("1 in total")
    assert await figure(page, "BYOK usage value this month").inner_text() != "$0.00"
    assert await figure(page, "Spent this month").inner_text() != "$0.00"
    await expect(row.locator("td").nth(5)).not_to_have_text("Never")
    chart = page.get_by_role("img", name="Daily spend, the last 30 days")
    await expect(chart.locator("text.empty")).to_have_count(0)
    today = chart.locator("g.day").last
    for bar in ("rect.bar.platform", "rect.bar.byok"):
        assert float(await today.locator(bar).get_attribute("height") or 0) > 0
    await expect(page.locator("#transactions tbody tr").first).to_contain_text("Usage charge")


async def seed_history(web: Server, org: Org, days: range) -> dict[str, tuple[int, int]]:
    """Calls on past days, oldest first, written as metering writes them (usage record, and a ledger
    charge when the balance paid): {date: (platform charge, BYOK list-price value)} in microcents."""
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    seeded: dict[str, tuple[int, int]] = {}
    for back in sorted(days, reverse=True):
        when = today - timedelta(days=back)
        platform, byok = (back * 37 % 11) * 30_000, (back * 53 % 13) * 25_000
        for route, cost, model, provider in ((Route.PLATFORM, platform, PLATFORM_MODEL, "anthropic"),
                                             (Route.BYOK, byok, BYOK_MODEL, "openai")):
            if cost:
                await metering.record_call(web.db, CallRecord(
                    request_id=new_request_id(), org_id=org.id, api_key_id=None, api_key_last_used_at=None,
                    agent_id=None, hold_id=None, model=model, provider=provider, route=route,
                    byok_key_id=None, byok_last_used_at=None, stream=False,
                    usage=TokenUsage(input_tokens=1000, output_tokens=500), usage_estimated=False,
                    cost_microcents=cost, fee_microcents=0,
                    charged_microcents=cost if route is Route.PLATFORM else 0, status="ok",
                    http_status=200, error_code=None, latency_ms=800, created_at=when))
        seeded[when.date().isoformat()] = (platform, byok)
    return seeded


async def test_the_chart_shows_each_days_spend_on_its_day(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web)
    seeded = await seed_history(web, org, range(1, 30))
    await sign_in(page, web, org.owner_email, password)
    assert (await add_key_through_dialog(page, "openai", new_key())).status == 303
    chart = page.get_by_role("img", name="Daily spend, the last 30 days")
    await expect(chart.locator("g.day")).to_have_count(30)
    unit = None  # pixels per microcent: the same for every bar
    for day, (platform, byok) in seeded.items():
        group = chart.locator(f'g.day[data-date="{day}"]')
        await expect(group.locator("title")).to_have_text(
            f"{datetime.fromisoformat(day):%b} {int(day[8:])}: platform charges {format_usd(platform)}, "
            f"BYOK usage value {format_usd(byok)}")
        for kind, value in (("platform", platform), ("byok", byok)):
            height = float(await group.locator(f"rect.bar.{kind}").get_attribute("height") or "nan")
            if value == 0:
                assert height == 0
                continue
            unit = unit or height / value
            assert abs(height - value * unit) < 0.02, (day, kind)
    total = sum(p for p, _ in seeded.values())
    totals = re.compile(re.escape(f"Totals: platform charges {format_usd(total)}"))
    await expect(chart).to_have_accessible_description(totals)
    await shot(page, "billing-page")

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.reload()
    narrow = page.get_by_role("img", name="Daily spend, the last 30 days")
    await expect(narrow).to_have_count(1)  # the phone's drawing; the laptop's is hidden
    await expect(narrow.locator("g.day")).to_have_count(30)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    await shot(page, "billing-page-phone")


async def test_a_key_the_provider_rejects_is_refused_in_the_dialog_and_nothing_is_stored(
        web: Server, page: Page) -> None:
    org = await signed_in_owner(web, page)
    key = new_key("invalid-")
    answer = await add_key_through_dialog(page, "openai", key)
    assert answer.status == 422
    dialog = page.get_by_role("dialog", name="Add key")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("alert")).to_contain_text("openai rejected this API key (HTTP 401")
    await expect(dialog.get_by_role("alert")).to_contain_text("Nothing was stored.")
    await expect(dialog.get_by_label("Provider")).to_have_value("openai")
    await expect(dialog.get_by_label("API key")).to_have_value("")
    await expect(dialog.get_by_label("API key")).to_be_focused()
    assert await dialog.get_by_label("API key").get_attribute("value") is None
    assert key not in await page.content() and masked(key) not in await page.content()
    assert await api_keys(web, org) == []
    await page.screenshot(path=str(SCREENSHOTS / "billing-add-key-rejected.png"))
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(page.get_by_text("No BYOK keys yet — calls use the platform account")).to_be_visible()
    # A form that skips the browser's checks gets the service's message, in the dialog too.
    csrf = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = await page.request.post(f"{web.base_url}/{org.slug}/billing/byok-keys",
                                      form={"csrf_token": csrf or "", "provider": "openai", "api_key": " "},
                                      headers={"Origin": web.base_url})
    assert refused.status == 422 and "apiKey must not be empty" in await refused.text()
    assert await api_keys(web, org) == []


async def test_deactivate_asks_first_then_the_key_is_inactive_and_can_be_added_again(
        web: Server, page: Page) -> None:
    org = await signed_in_owner(web, page)
    key = new_key()
    assert (await add_key_through_dialog(page, "anthropic", key)).status == 303
    row = page.locator("#byok-keys tbody tr")
    await row.get_by_role("button", name="Deactivate").click()
    confirm = page.get_by_role("dialog", name="Deactivate the anthropic key?")
    await expect(confirm).to_be_visible()
    await confirm.get_by_role("button", name="Cancel").click()  # changing one's mind changes nothing
    await expect(row.locator(".badge")).to_have_text("active")
    assert [k["status"] for k in await api_keys(web, org)] == ["active"]

    await row.get_by_role("button", name="Deactivate").click()
    await confirm.get_by_role("button", name="Yes, deactivate").click()
    await page.wait_for_load_state("networkidle")
    await expect(row.locator(".badge")).to_have_text("inactive")
    await expect(row.get_by_role("button", name="Deactivate")).to_have_count(0)
    await expect(page.get_by_role("status").first).to_contain_text("Deactivated the anthropic key")
    assert [k["status"] for k in await api_keys(web, org)] == ["inactive"]

    assert (await add_key_through_dialog(page, "anthropic", key)).status == 303  # the same key, again
    await expect(page.locator("#byok-keys .badge")).to_have_text(["active", "inactive"])


async def test_a_key_the_provider_restricts_is_stored_with_its_warning(web: Server, page: Page) -> None:
    org = await signed_in_owner(web, page)
    key = new_key("restricted-")
    assert (await add_key_through_dialog(page, "openai", key)).status == 303
    row = page.locator("#byok-keys tbody tr")
    await expect(row.locator("td").nth(3)).to_have_text("restricted")
    await expect(page.locator(".warning")).to_have_text(
        "openai accepted this key but refused it access (HTTP 403): calls may fail until the key is given "
        "access to the models you use.")
    assert key not in await page.content()
    await page.reload()  # a notice is shown once
    await expect(page.locator(".warning, .notice")).to_have_count(0)
    assert [k["verification"] for k in await api_keys(web, org)] == ["restricted"]


async def test_a_member_sees_keys_read_only_and_a_forged_post_changes_nothing(web: Server,
                                                                             page: Page) -> None:
    org, _password = await new_org_with_login(web)
    async with web.api(org.key) as api:
        added = await api.post("/api/v1/billing/byok-keys", json={"provider": "openai", "apiKey": new_key()})
        assert added.status_code == 201, added.text
    email = f"member-{secrets.token_hex(4)}@{org.slug}.test"
    created = await accounts.create_user(web.db, org_slug=org.slug, email=email, role="member")
    await sign_in(page, web, email, created["password"])
    assert page.url == f"{web.base_url}/{org.slug}/billing"
    await expect(page.locator("#byok-keys tbody tr")).to_have_count(1)
    for name in ("Add key", "Deactivate", "Deposit"):
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    await expect(page.locator("dialog, input[type=password], form[method=post]:not([action='/logout'])")) \
        .to_have_count(0)
    await expect(page.get_by_text("Only owners and admins can add or deactivate keys")).to_be_visible()
    await shot(page, "billing-member-read-only")

    csrf = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert csrf
    before_keys, before_balance = await api_keys(web, org), await balance_microcents(web, org)
    origin = {"Origin": web.base_url}
    posts = {
        f"/{org.slug}/billing/byok-keys": {"provider": "anthropic", "api_key": new_key()},
        f"/{org.slug}/billing/byok-keys/{before_keys[0]['id']}/deactivate": {},
        f"/{org.slug}/billing/deposit": {"amount": "50", "idempotency_key": str(uuid.uuid4())},
    }
    for path, fields in posts.items():
        forged = await page.request.post(web.base_url + path, form={"csrf_token": csrf, **fields},
                                         headers=origin)
        assert forged.status == 403, path
    assert await api_keys(web, org) == before_keys
    assert await balance_microcents(web, org) == before_balance


async def test_another_orgs_billing_page_is_not_found(web: Server, page: Page) -> None:
    await signed_in_owner(web, page)
    other, _password = await new_org_with_login(web)
    answer = await page.goto(f"{web.base_url}/{other.slug}/billing")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert other.slug not in await page.locator("main").inner_text()
    missing = await page.goto(f"{web.base_url}/no-such-org-{secrets.token_hex(3)}/billing")
    assert missing is not None and missing.status == 404


async def test_posts_without_the_csrf_token_or_from_another_origin_are_refused(web: Server,
                                                                               page: Page) -> None:
    org = await signed_in_owner(web, page)
    csrf = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    key_form = {"provider": "openai", "api_key": new_key()}
    deposit_form = {"amount": "25", "idempotency_key": str(uuid.uuid4())}
    for path, fields in ((f"/{org.slug}/billing/byok-keys", key_form),
                         (f"/{org.slug}/billing/deposit", deposit_form)):
        no_token = await page.request.post(web.base_url + path, form=fields,
                                           headers={"Origin": web.base_url})
        assert no_token.status == 403
        cross = await page.request.post(web.base_url + path, form={"csrf_token": csrf or "", **fields},
                                        headers={"Origin": "http://evil.example"})
        assert cross.status == 403
        assert key_form["api_key"] not in await no_token.text() + await cross.text()
    assert await api_keys(web, org) == []
    assert await balance_microcents(web, org) == 10_000_000


async def test_a_deposit_raises_the_balance_once_and_is_listed(web: Server, page: Page) -> None:
    org = await signed_in_owner(web, page)
    deposit = page.locator("#deposit")
    await deposit.get_by_label("Amount in dollars").fill("25.50")
    await deposit.get_by_role("button", name="Deposit").click()
    await page.wait_for_load_state("networkidle")
    await expect(figure(page, "Balance")).to_have_text("$35.50")
    await expect(page.get_by_role("status")).to_contain_text("Deposited $25.50. The balance is now $35.50.")
    newest = page.locator("#transactions tbody tr").first
    await expect(newest).to_contain_text("Direct deposit")
    await expect(newest).to_contain_text("+$25.50")
    await expect(newest).to_contain_text("$35.50")
    await expect(page.locator(".figure", has_text="Platform fee")).to_contain_text(
        "Platform fee waived — $74.50 of deposits until the 5.5% fee applies")
    # Past $100 of deposits the fee applies.
    await deposit.get_by_label("Amount in dollars").fill("75")
    await deposit.get_by_role("button", name="Deposit").click()
    await expect(page.locator(".figure", has_text="Platform fee")).to_contain_text(
        "5.5% platform fee applies")

    # The same form submitted twice (a double click) credits once.
    csrf = await page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    once = await deposit.locator("input[name=idempotency_key]").get_attribute("value") or ""
    form = {"csrf_token": csrf, "amount": "10", "idempotency_key": once}
    for _ in range(2):
        again = await page.request.post(f"{web.base_url}/{org.slug}/billing/deposit", form=form,
                                        headers={"Origin": web.base_url}, max_redirects=0)
        assert again.status == 303
    assert await balance_microcents(web, org) == 120_500_000

    # A bad amount is explained next to the form and credits nothing.
    await page.reload()
    await deposit.get_by_label("Amount in dollars").evaluate("e => e.removeAttribute('min')")
    await deposit.get_by_label("Amount in dollars").fill("-3")
    await deposit.get_by_role("button", name="Deposit").click()
    await expect(deposit.get_by_role("alert")).to_have_text("Enter an amount in dollars, like 25 or 25.50.")
    assert await balance_microcents(web, org) == 120_500_000


async def test_transactions_are_paged_with_older_and_newest_links(web: Server, page: Page) -> None:
    org = await signed_in_owner(web, page, deposit_cents=100)
    async with web.api(org.key) as api:
        for cents in range(1, 21):
            response = await api.post("/api/v1/billing/deposit", json={"amountCents": cents})
            assert response.status_code == 201
    await page.reload()
    rows = page.locator("#transactions tbody tr")
    await expect(rows).to_have_count(20)
    await expect(rows.first).to_contain_text("+$0.20")
    await page.get_by_role("link", name="Older →").click()
    await expect(rows).to_have_count(2)  # the first $1.00 deposit and the early-bird credit
    await expect(rows.last).to_contain_text("Promotional credit")
    await expect(page.get_by_role("link", name="Older →")).to_have_count(0)
    await page.get_by_role("link", name="← Newest").click()
    await expect(rows).to_have_count(20)
    for cursor in ("abc", "0", "-1", "9" * 40):
        bad = await page.goto(f"{web.base_url}/{org.slug}/billing?cursor={cursor}")
        assert bad is not None and bad.status == 400, cursor


async def test_keys_can_be_added_and_deactivated_without_javascript(web: Server, browser: Browser) -> None:
    context = await browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        org = await signed_in_owner(web, page)
        key = new_key()
        await page.get_by_role("button", name="Add key").click()  # a GET that opens the dialog
        dialog = page.get_by_role("dialog", name="Add key")
        await expect(dialog).to_be_visible()
        await dialog.get_by_label("Provider").select_option("gemini")
        await dialog.get_by_label("API key").fill(key)
        await dialog.get_by_role("button", name="Submit").click()
        row = page.locator("#byok-keys tbody tr")
        await expect(row.locator("td").nth(1)).to_have_text(masked(key))
        await row.get_by_role("button", name="Deactivate").click()
        confirm = page.get_by_role("dialog", name="Deactivate the gemini key?")
        await confirm.get_by_role("button", name="Yes, deactivate").click()
        await expect(row.locator(".badge")).to_have_text("inactive")
        assert [k["status"] for k in await api_keys(web, org)] == ["inactive"]
    finally:
        await context.close()

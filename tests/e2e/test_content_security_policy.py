"""The dashboard under its Content-Security-Policy: every page works with scripts from /static only, and
the browser reports no violation (an inline script or handler would be blocked and reported)."""

from conftest import sign_in
from playwright.async_api import ConsoleMessage, Page

from alumia.services import accounts

from harness import Server, new_org_with_login


async def test_pages_switch_orgs_and_confirm_without_any_csp_violation(web: Server, page: Page) -> None:
    violations: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    page.on("console", watch)
    first, password = await new_org_with_login(web)
    second, _ = await new_org_with_login(web)
    await accounts.create_user(web.db, org_slug=second.slug, email=first.owner_email, role="member")
    await sign_in(page, web, first.owner_email, password)
    for path in (f"/{first.slug}/billing", f"/{first.slug}/agents", f"/{first.slug}/lab"):
        response = await page.goto(f"{web.base_url}{path}")
        assert response is not None and response.headers["x-frame-options"] == "DENY"
    await page.goto(f"{web.base_url}/{first.slug}/agents")
    # The org switcher (a script from /static) keeps the page and changes the org.
    await page.locator("#org-switcher").select_option(second.slug)
    await page.wait_for_url(f"{web.base_url}/{second.slug}/agents")
    await page.goto(f"{web.base_url}/{first.slug}/billing")
    await page.get_by_role("button", name="Add key").first.click()
    assert await page.get_by_role("dialog", name="Add key").is_visible()
    assert violations == []

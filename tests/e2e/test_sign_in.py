"""Signing in and out in a real browser: the session cookie's flags, CSRF on every form, no GET changes."""

import httpx
from conftest import shot, sign_in
from playwright.async_api import BrowserContext, Page

from harness import Server, new_org_with_login


async def test_sign_in_sets_a_locked_down_cookie_and_sign_out_ends_it(web: Server, page: Page,
                                                                      context: BrowserContext) -> None:
    org, password = await new_org_with_login(web)
    await page.goto(f"{web.base_url}/login")
    await shot(page, "00-sign-in")
    await sign_in(page, web, org.owner_email, password)
    assert page.url.endswith(f"/{org.slug}/billing")
    [cookie] = [c for c in await context.cookies() if c["name"] == "alumia_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{web.base_url}/login")
    assert not [c for c in await context.cookies() if c["name"] == "alumia_session"]
    await page.goto(f"{web.base_url}/{org.slug}/billing")
    assert page.url.endswith("/login")


async def test_a_wrong_password_is_refused_without_saying_which_part(web: Server, page: Page) -> None:
    org, _password = await new_org_with_login(web)
    await sign_in(page, web, org.owner_email, "not-the-password")
    assert page.url.endswith("/login")
    await page.get_by_role("alert").wait_for()
    assert await page.get_by_role("alert").inner_text() == "that email and password do not match"
    assert "not-the-password" not in await page.content()


async def test_forms_without_their_csrf_token_or_from_another_origin_are_refused(web: Server) -> None:
    org, password = await new_org_with_login(web)
    async with httpx.AsyncClient(base_url=web.base_url) as client:
        no_token = await client.post("/login", data={"email": org.owner_email, "password": password},
                                     headers={"Origin": web.base_url})
        assert no_token.status_code == 403
        form = await client.get("/login")
        token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        cross = await client.post("/login", data={"email": org.owner_email, "password": password,
                                                  "csrf_token": token},
                                  headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        ok = await client.post("/login", data={"email": org.owner_email, "password": password,
                                               "csrf_token": token}, headers={"Origin": web.base_url})
        assert ok.status_code == 303 and ok.headers["location"] == f"/{org.slug}/billing"
        # Signed in now: logout without the session's CSRF token changes nothing.
        refused = await client.post("/logout", data={}, headers={"Origin": web.base_url})
        assert refused.status_code == 403
        assert (await client.get("/")).headers["location"] == f"/{org.slug}/billing"

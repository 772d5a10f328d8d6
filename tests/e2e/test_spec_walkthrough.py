"""spec/byok.md, followed step by step as a person would, in a real browser.

"Open the lab, pick a model whose provider has a BYOK key, send a message, and check
/<orgSlug>/billing. The BYOK request count goes up; the spent balance does not change." Then §5:
deactivate the key, and the next request falls back to the platform account and is charged.
"""

import re
import secrets

from conftest import shot, sign_in
from playwright.async_api import Locator, Page, Response, expect

from harness import Org, Server, new_org_with_login

MODEL = "gpt-5.6-luna"  # an openai model


def figure(page: Page, label: str) -> Locator:
    """The value of the billing page's figure with this label."""
    return page.locator(".figure").filter(has=page.get_by_text(label, exact=True)).locator(".value")


async def figures(page: Page) -> dict[str, str]:
    """The billing page's balance, spent this month and BYOK request count, as shown."""
    return {label: (await figure(page, label).inner_text()).strip()
            for label in ("Balance", "Spent this month", "BYOK request count")}


async def balance_microcents(server: Server, org: Org) -> int:
    async with server.api(org.key) as api:
        return (await api.get("/api/v1/billing")).json()["data"]["balance"]["balanceMicrocents"]


async def open_billing(page: Page) -> None:
    """Return to Billing through the navigation."""
    await page.get_by_role("navigation", name="Org").get_by_role("link", name="Billing").click()
    await expect(page.get_by_role("heading", name="Billing", exact=True)).to_be_visible()


async def send_from_lab(page: Page, message: str) -> None:
    """Open the lab, pick the model, type a message, click Send, wait for the whole answer."""
    await page.get_by_role("navigation", name="Org").get_by_role("link", name="Lab").click()
    await expect(page.get_by_role("heading", name="Lab", exact=True)).to_be_visible()
    await page.get_by_label("Model").select_option(MODEL)
    await page.get_by_label("Message").fill(message)
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator(".answer .meta")).to_have_count(1)


async def test_the_spec_walkthrough(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web, deposit_cents=1_000)
    typed_key = "sk-proj-test-" + secrets.token_hex(20)
    masked = typed_key[:7] + "…" + typed_key[-4:]
    responses: list[Response] = []
    page.on("response", lambda response: responses.append(response))

    # Sign in.
    await sign_in(page, web, org.owner_email, password)
    await shot(page, "walk-01-signed-in")

    # 1. Open Billing: navigate to /<orgSlug>/billing and scroll to the BYOK keys section.
    await page.goto(f"{web.base_url}/{org.slug}/billing")
    start = await figures(page)
    start_balance = await balance_microcents(web, org)
    await shot(page, "walk-02-billing")
    section_heading = page.get_by_role("heading", name="BYOK keys", exact=True)
    await section_heading.scroll_into_view_if_needed()
    await expect(section_heading).to_be_in_viewport()
    await expect(page.get_by_text("No BYOK keys yet")).to_be_visible()
    await shot(page, "walk-03-byok-keys")

    # 2. Add a key: click Add key; the dialog asks for Provider and API key; Submit.
    await page.get_by_role("button", name="Add key").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Provider").select_option("openai")
    await dialog.get_by_label("API key").fill(typed_key)
    await expect(dialog.get_by_label("API key")).to_have_attribute("type", "password")
    await shot(page, "walk-04-add-key-dialog")
    await dialog.get_by_role("button", name="Submit").click()
    await page.wait_for_load_state("networkidle")
    # "The dashboard only ever shows a masked prefix afterward."
    keys = page.locator("#byok-keys")
    await expect(keys.get_by_text(masked, exact=True).first).to_be_visible()
    assert typed_key not in await page.content()
    await keys.scroll_into_view_if_needed()
    await shot(page, "walk-05-key-added")

    # Verify it's working: open the lab, pick a model whose provider has a BYOK key, send a message.
    await send_from_lab(page, "hello through my own key")
    answer = page.locator(".answer").last
    await expect(answer).to_contain_text(f"Simulated reply from openai/{MODEL}")
    await expect(answer.locator(".badge")).to_have_text("BYOK")
    await expect(answer.locator(".cost")).to_have_text("$0.00 — billed by your provider")
    await shot(page, "walk-06-lab-byok-answer")

    # ... and check Billing: the BYOK request count goes up; the spent balance does not change.
    await open_billing(page)
    after_byok = await figures(page)
    assert int(after_byok["BYOK request count"]) == int(start["BYOK request count"]) + 1
    assert after_byok["Balance"] == start["Balance"]
    assert after_byok["Spent this month"] == start["Spent this month"]
    assert await balance_microcents(web, org) == start_balance
    await shot(page, "walk-07-billing-after-byok")

    # 5. Deactivate the key (with its confirmation); the next request falls back to the platform.
    page.on("dialog", lambda d: d.accept())  # in case the confirmation is the browser's own
    row = page.locator("#byok-keys tr", has_text=masked)
    await row.get_by_role("button", name=re.compile(r"^Deactivate")).click()
    confirm = page.get_by_role("dialog")
    await expect(confirm).to_be_visible()
    await shot(page, "walk-08-deactivate-confirm")
    await confirm.get_by_role("button", name=re.compile(r"deactivate", re.IGNORECASE)).click()
    await page.wait_for_load_state("networkidle")
    await expect(page.locator("#byok-keys tr", has_text=masked)).to_contain_text("inactive")
    deactivate_buttons = page.locator("#byok-keys").get_by_role("button", name=re.compile(r"^Deactivate"))
    await expect(deactivate_buttons).to_have_count(0)
    before_platform = await figures(page)
    assert before_platform == after_byok
    await shot(page, "walk-09-key-deactivated")

    await send_from_lab(page, "hello through the platform")
    answer = page.locator(".answer").last
    await expect(answer.locator(".badge")).to_have_text("platform")
    cost = answer.locator(".cost")
    await expect(cost).to_have_text(re.compile(r"^\$0\.\d+ from your balance$"))
    charged = int(await cost.get_attribute("data-microcents") or "0")
    assert charged > 0
    shown = (await cost.inner_text()).split(" ")[0]
    whole, frac = shown.removeprefix("$").split(".")
    assert int(whole) * 1_000_000 + int(frac.ljust(6, "0")) == charged  # the text is the same amount
    await shot(page, "walk-10-lab-platform-answer")

    # Back in Billing: the balance fell by exactly what the lab showed; the BYOK count did not move.
    await open_billing(page)
    final = await figures(page)
    assert await balance_microcents(web, org) == start_balance - charged
    assert final["Balance"] != start["Balance"]
    assert final["Spent this month"] != start["Spent this month"]
    assert final["BYOK request count"] == after_byok["BYOK request count"]
    await shot(page, "walk-11-billing-after-platform")

    # The typed key reached no response the browser received: no body, no header.
    assert responses
    for response in responses:
        assert typed_key not in str(response.headers), response.url
        try:
            body = await response.body()
        except Exception:  # a redirect has no body to read
            continue
        assert typed_key.encode() not in body, response.url

"""The agent pages in a real browser: Ala first and undeletable, create / edit / deactivate / delete,
key-like text refused with a pointer to Billing and never shown again, and no key field or BYOK toggle."""

import re
import secrets

from conftest import shot, sign_in
from playwright.async_api import Page, expect

from alumia.services import accounts

from harness import Org, Server, new_org_with_login

KEYISH = re.compile(r"key|secret|password|credential|byok", re.IGNORECASE)


async def open_agents(page: Page, server: Server, org: Org, password: str) -> None:
    await sign_in(page, server, org.owner_email, password)
    await page.goto(f"{server.base_url}/{org.slug}/agents")
    await expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()


async def test_ala_is_listed_first_and_cannot_be_deleted(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web)
    async with web.api(org.key) as api:
        created = await api.post("/api/v1/agents", json={"name": "Able", "model": "claude-haiku-4-5"})
    assert created.status_code == 201
    await open_agents(page, web, org, password)
    rows = page.locator("table.agents tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text("Ala")
    await expect(rows.first).to_contain_text("Default")
    await expect(rows.nth(1)).to_contain_text("Able")
    await shot(page, "agents-01-list")
    await rows.first.get_by_role("link", name="Ala", exact=True).click()
    await expect(page.get_by_role("heading", name="Ala")).to_be_visible()
    await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    # Ala can still be edited like any agent.
    await expect(page.get_by_role("button", name="Save")).to_be_visible()


async def test_create_edit_deactivate_and_delete_an_agent(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web)
    await open_agents(page, web, org, password)
    await page.get_by_label("Name").fill("Support bot")
    await page.get_by_label("Model").select_option("claude-sonnet-5")
    await page.get_by_role("button", name="Create agent").click()
    await expect(page.get_by_role("heading", name="Support bot")).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text("Agent created")
    agent_url = page.url.split("?")[0]

    await page.get_by_label("System prompt").fill("You answer billing questions politely.")
    await page.get_by_label("Description").fill("Answers customers")
    await page.get_by_label("Model").select_option("gpt-5.6-terra")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Saved.")
    await expect(page.get_by_label("System prompt")).to_have_value("You answer billing questions politely.")
    await expect(page.get_by_label("Model")).to_have_value("gpt-5.6-terra")
    await shot(page, "agents-02-edit")
    # "Try it in the lab" opens the lab with this agent picked and its model shown.
    await page.get_by_role("link", name="Try it in the lab").click()
    await expect(page.get_by_label("Agent")).to_have_value(agent_url.rsplit("/", 1)[1])
    await expect(page.get_by_label("Model")).to_have_value("gpt-5.6-terra")
    await page.go_back()

    await page.get_by_label("Active").uncheck()
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Saved.")
    await expect(page.get_by_label("Active")).not_to_be_checked()
    async with web.api(org.key) as api:
        agent = (await api.get(f"/api/v1/agents/{agent_url.rsplit('/', 1)[1]}")).json()["data"]
    assert agent["isActive"] is False and agent["model"] == "gpt-5.6-terra"
    assert agent["systemPrompt"] == "You answer billing questions politely."
    assert agent["description"] == "Answers customers"

    # An inactive agent is listed as such and not offered in the lab.
    await page.goto(f"{web.base_url}/{org.slug}/agents")
    await expect(page.locator("tr", has_text="Support bot")).to_contain_text("Inactive")
    await page.goto(f"{web.base_url}/{org.slug}/lab")
    assert "Support bot" not in await page.get_by_label("Agent").inner_text()

    await page.goto(agent_url)
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete").click()
    await page.wait_for_url(re.compile(r"/agents\?deleted=1$"))
    await expect(page.get_by_role("status")).to_have_text("Agent deleted.")
    await expect(page.locator("table.agents tbody tr")).to_have_count(1)


async def test_a_key_in_the_system_prompt_is_refused_and_not_shown_again(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web)
    key = "sk-ant-test-" + secrets.token_hex(24)
    await open_agents(page, web, org, password)
    await page.get_by_role("link", name="Ala", exact=True).click()
    await page.get_by_label("System prompt").fill(f"Use this key: {key} when calling Claude.")
    async with page.expect_response(lambda r: r.request.method == "POST") as posted:
        await page.get_by_role("button", name="Save").click()
    assert (await posted.value).status == 422
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Billing")
    await expect(alert).to_contain_text(f"/{org.slug}/billing")
    assert key not in await page.content()
    await expect(page.get_by_label("System prompt")).to_have_value(
        "Use this key: [redacted] when calling Claude.")
    await shot(page, "agents-03-key-refused")
    async with web.api(org.key) as api:
        [ala] = [a for a in (await api.get("/api/v1/agents")).json()["data"]["items"] if a["isDefault"]]
    assert ala["systemPrompt"] == ""

    # The same from the New agent form's name.
    await page.goto(f"{web.base_url}/{org.slug}/agents")
    await page.get_by_label("Name").fill(key)
    await page.get_by_role("button", name="Create agent").click()
    await expect(page.get_by_role("alert")).to_contain_text("Billing")
    assert key not in await page.content()


async def test_no_byok_toggle_or_key_field_on_the_agent_pages(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web)
    await open_agents(page, web, org, password)
    for path in ("agents", "agents/ala"):
        await page.goto(f"{web.base_url}/{org.slug}/{path}")
        fields = await page.locator("input, select, textarea").evaluate_all(
            "els => els.filter(e => e.name !== 'csrf_token')"
            ".map(e => ({name: e.name || '', id: e.id || '', type: e.type || ''}))")
        assert fields
        for field in fields:
            assert field["type"] != "password", field
            assert not KEYISH.search(field["name"]) and not KEYISH.search(field["id"]), field
        labels = await page.locator("label").all_text_contents()
        assert not [t for t in labels if KEYISH.search(t)], labels
        checkboxes = await page.locator("input[type=checkbox]").count()
        assert checkboxes == (1 if path == "agents/ala" else 0)  # Active, and nothing else


async def test_a_plain_member_edits_agents_but_cannot_delete_one(web: Server, page: Page) -> None:
    org, _password = await new_org_with_login(web)
    async with web.api(org.key) as api:
        created = await api.post("/api/v1/agents", json={"name": "Helper", "model": "gpt-5.6-luna"})
    helper = created.json()["data"]
    member = await accounts.create_user(web.db, org_slug=org.slug, email=f"m@{org.slug}.test", role="member")
    await sign_in(page, web, f"m@{org.slug}.test", member["password"])
    await page.goto(f"{web.base_url}/{org.slug}/agents/{helper['id']}")
    await expect(page.get_by_role("button", name="Save")).to_be_visible()
    await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    token = await page.locator('input[name="csrf_token"]').first.get_attribute("value")
    refused = await page.request.post(f"{web.base_url}/{org.slug}/agents/{helper['id']}/delete",
                                      form={"csrf_token": token or ""}, headers={"Origin": web.base_url},
                                      max_redirects=0)
    assert refused.status == 403


async def test_agent_forms_need_their_csrf_token(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web)
    await open_agents(page, web, org, password)
    refused = await page.request.post(f"{web.base_url}/{org.slug}/agents",
                                      form={"name": "Sneaky", "model": "gpt-5.6-luna"},
                                      headers={"Origin": web.base_url}, max_redirects=0)
    assert refused.status == 403
    async with web.api(org.key) as api:
        names = [a["name"] for a in (await api.get("/api/v1/agents")).json()["data"]["items"]]
    assert names == ["Ala"]

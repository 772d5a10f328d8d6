"""The lab in a real browser: route marks per model, a streamed answer with its route, tokens and cost,
calls attributed to the picked agent, no key field, and the chat endpoint's CSRF check."""

import re

from conftest import shot, sign_in
from playwright.async_api import Page, expect

from harness import Org, Server, fake_key, new_org_with_login

KEYISH_NAME = re.compile(r"key|secret|password|credential", re.IGNORECASE)


async def add_byok_key(server: Server, org: Org, provider: str, prefix: str = "sk-proj-test-") -> dict:
    """A BYOK key added through the API, as an owner would in Billing."""
    async with server.api(org.key) as api:
        added = await api.post("/api/v1/billing/byok-keys",
                               json={"provider": provider, "apiKey": fake_key(prefix)})
    assert added.status_code == 201, added.text
    return added.json()["data"]


async def option_texts(page: Page, provider: str) -> list[str]:
    """The texts of the Model select's options under one provider's <optgroup>."""
    options = page.get_by_label("Model").locator(f'optgroup[label="{provider}"] option')
    return await options.all_text_contents()


async def open_lab(page: Page, server: Server, org: Org, password: str) -> None:
    await sign_in(page, server, org.owner_email, password)
    await page.goto(f"{server.base_url}/{org.slug}/lab")
    await expect(page.get_by_role("heading", name="Lab")).to_be_visible()


async def send(page: Page, message: str) -> None:
    """Type a message, click Send and wait for the answer's route, tokens and cost."""
    before = await page.locator(".answer .meta").count()
    await page.get_by_label("Message").fill(message)
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator(".answer .meta")).to_have_count(before + 1)


async def test_the_model_list_marks_the_route_each_model_would_take(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web)
    await add_byok_key(web, org, "openai")
    await open_lab(page, web, org, password)
    openai, anthropic, groq = [await option_texts(page, p) for p in ("openai", "anthropic", "groq")]
    assert openai and all(t.endswith("(BYOK)") for t in openai), openai
    assert anthropic and all(t.endswith("(platform)") for t in anthropic), anthropic
    assert groq and all(t.endswith("(free)") for t in groq), groq
    assert "gpt-5.6-luna (BYOK)" in openai
    # Every catalog model is offered, grouped by its provider.
    groups = await page.get_by_label("Model").locator("optgroup").evaluate_all("gs => gs.map(g => g.label)")
    assert len(groups) == 14
    await shot(page, "lab-01-route-marks")


async def test_a_message_streams_an_answer_with_route_tokens_and_cost(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web, deposit_cents=1_000)
    await open_lab(page, web, org, password)
    await page.get_by_label("Model").select_option("gpt-5.6-luna")
    async with page.expect_response(f"{web.base_url}/{org.slug}/lab/chat") as chat:
        await send(page, "hello from the lab")
    response = await chat.value
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-alumia-route"] == "platform"
    answer = page.locator(".answer").last
    await expect(answer).to_contain_text("Simulated reply from openai/gpt-5.6-luna: hello from the lab")
    meta = answer.locator(".meta")
    await expect(meta.locator(".badge")).to_have_text("platform")
    # prompt: 4 + 4 words; reply: the 4-word prefix plus the 4 echoed words.
    await expect(meta).to_contain_text("8 tokens in · 8 out")
    async with web.api(org.key) as api:
        snapshot = (await api.get("/api/v1/billing")).json()["data"]
    spent = snapshot["usage"]["allTime"]["spentMicrocents"]
    assert spent > 0
    await expect(meta.locator(".cost")).to_have_text(re.compile(r"^\$0\.\d+ from your balance$"))
    # The transcript is kept on the page: a second message adds a second turn.
    await send(page, "and again")
    await expect(page.locator(".turn")).to_have_count(2)
    await shot(page, "lab-02-streamed-answer")
    # On a phone the pickers stack and nothing overflows sideways.
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await shot(page, "lab-04-phone-390")


async def test_a_byok_answer_costs_the_balance_nothing(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web, deposit_cents=1_000)
    await add_byok_key(web, org, "openai")
    await open_lab(page, web, org, password)
    await page.get_by_label("Model").select_option("gpt-5.6-luna")
    await send(page, "on my own key")
    meta = page.locator(".answer .meta").last
    await expect(meta.locator(".badge")).to_have_text("BYOK")
    await expect(meta.locator(".cost")).to_have_text("$0.00 — billed by your provider")


async def test_a_call_for_an_agent_is_attributed_to_it_and_uses_its_prompt(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web, deposit_cents=1_000)
    async with web.api(org.key) as api:
        created = await api.post("/api/v1/agents", json={"name": "Terse", "model": "llama-3.3-70b-versatile",
                                                          "systemPrompt": "Answer in one line."})
    assert created.status_code == 201, created.text
    agent = created.json()["data"]
    await open_lab(page, web, org, password)
    await page.get_by_label("Agent").select_option(agent["id"])
    # The agent's model is shown (and locked) in the Model select, with its route.
    await expect(page.get_by_label("Model")).to_be_disabled()
    await expect(page.get_by_label("Model")).to_have_value("llama-3.3-70b-versatile")
    await send(page, "hi there")
    meta = page.locator(".answer .meta").last
    await expect(meta.locator(".badge")).to_have_text("free")
    # The system prompt was sent: (4 + 4 words) + (4 + 2 words) prompt tokens.
    await expect(meta).to_contain_text("14 tokens in")
    await expect(page.locator(".turn .who").last).to_have_text("You → Terse (llama-3.3-70b-versatile)")
    async with web.api(org.key) as api:
        spending = (await api.get("/api/v1/billing/spending/by-agent")).json()["data"]["items"]
    [row] = [i for i in spending if i["agentId"] == agent["id"]]
    assert row["requestCount"] == 1 and row["agentName"] == "Terse"
    assert not [i for i in spending if i["agentId"] is None]
    await shot(page, "lab-03-agent")


async def test_no_field_on_the_lab_accepts_a_key(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web, deposit_cents=1_000)
    await open_lab(page, web, org, password)
    fields = await page.locator("input, select, textarea").evaluate_all(
        "els => els.map(e => ({name: e.name || '', id: e.id || '', type: e.type || ''}))")
    assert fields
    for field in fields:
        assert field["type"] != "password", field
        assert not KEYISH_NAME.search(field["name"]) and not KEYISH_NAME.search(field["id"]), field
    labels = await page.locator("label").all_text_contents()
    assert not [t for t in labels if KEYISH_NAME.search(t)], labels
    # A key pasted into the message is refused, not sent, and not left on the screen.
    pasted = fake_key("sk-ant-test-")
    await send_refused(page, f"use this {pasted}")
    await expect(page.get_by_role("alert").last).to_contain_text("Billing")
    assert pasted not in await page.content()
    async with web.api(org.key) as api:
        assert (await api.get("/api/v1/billing")).json()["data"]["usage"]["allTime"]["requestCount"] == 0


async def send_refused(page: Page, message: str) -> None:
    await page.get_by_label("Message").fill(message)
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator(".answer .error")).to_have_count(1)


async def test_the_chat_endpoint_needs_the_csrf_header_and_this_origin(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web, deposit_cents=1_000)
    await open_lab(page, web, org, password)
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    url = f"{web.base_url}/{org.slug}/lab/chat"
    body = {"model": "gpt-5.6-luna", "agent": "", "message": "hello"}
    same = {"Content-Type": "application/json", "Origin": web.base_url}
    missing = await page.request.post(url, data=body, headers=same)
    assert missing.status == 403
    assert (await missing.json())["error"]["code"] == "FORBIDDEN"
    wrong = await page.request.post(url, data=body, headers={**same, "X-CSRF-Token": "0" * 64})
    assert wrong.status == 403
    cross = await page.request.post(url, data=body, headers={**same, "Origin": "http://evil.example",
                                                             "X-CSRF-Token": token})
    assert cross.status == 403
    async with web.api(org.key) as api:
        assert (await api.get("/api/v1/billing")).json()["data"]["usage"]["allTime"]["requestCount"] == 0
    ok = await page.request.post(url, data=body, headers={**same, "X-CSRF-Token": token})
    assert ok.status == 200
    text = await ok.text()
    assert text.rstrip().endswith("}") and '"alumia":' in text.rsplit("data: ", 1)[1]
    assert "data: [DONE]" in text


async def test_a_signed_out_browser_and_a_stranger_get_no_lab(web: Server, page: Page) -> None:
    org, _password = await new_org_with_login(web)
    other, other_password = await new_org_with_login(web)
    await page.goto(f"{web.base_url}/{org.slug}/lab")
    assert page.url.endswith("/login")
    await sign_in(page, web, other.owner_email, other_password)
    response = await page.goto(f"{web.base_url}/{org.slug}/lab")
    assert response is not None and response.status == 404


async def test_the_answer_is_shown_while_it_streams(web: Server, page: Page) -> None:
    """The page paints each chunk as it arrives, not when the stream ends.

    The simulator sends a whole answer at once, so the stream is held open here by a stand-in fetch
    that sends the first half, waits to be released, then sends the rest (the real frames' shape).
    """
    org, password = await new_org_with_login(web, deposit_cents=1_000)
    await open_lab(page, web, org, password)
    await page.evaluate("""() => {
      const frame = (o) => new TextEncoder().encode("data: " + JSON.stringify(o) + "\\n\\n");
      const delta = (t) => frame({choices: [{index: 0, delta: {content: t}}]});
      window.releaseStream = null;
      window.fetch = async () => new Response(new ReadableStream({
        async start(out) {
          out.enqueue(delta("First half"));
          await new Promise((resolve) => { window.releaseStream = resolve; });
          out.enqueue(delta(", second half."));
          out.enqueue(new TextEncoder().encode("data: [DONE]\\n\\n"));
          out.enqueue(frame({alumia: {route: "platform", requestId: "req_x", inputTokens: 5,
                                      outputTokens: 4, chargedMicrocents: 7, charged: "$0.000007",
                                      byok: false}}));
          out.close();
        }}), {status: 200, headers: {"Content-Type": "text/event-stream"}});
    }""")
    await page.get_by_label("Message").fill("stream please")
    await page.get_by_role("button", name="Send").click()
    answer = page.locator(".answer").last
    await expect(answer.locator(".said")).to_have_text("First half")
    await expect(answer).to_have_attribute("aria-busy", "true")
    await expect(answer.locator(".meta")).to_have_count(0)
    await page.evaluate("window.releaseStream()")
    await expect(answer.locator(".said")).to_have_text("First half, second half.")
    await expect(answer.locator(".meta")).to_contain_text("5 tokens in · 4 out")
    await expect(answer).not_to_have_attribute("aria-busy", "true")


async def test_a_stream_cut_upstream_shows_the_error_and_what_was_charged(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web, deposit_cents=1_000)
    await open_lab(page, web, org, password)
    await page.get_by_label("Model").select_option("gpt-5.6-luna")
    await send(page, "one two three four five six seven [[sim:cut_after=4]]")
    answer = page.locator(".answer").last
    await expect(answer.get_by_role("alert")).to_contain_text("stopped streaming")
    await expect(answer.locator(".said")).to_contain_text("Simulated reply")
    await expect(answer.locator(".meta .badge")).to_have_text("platform")


async def test_an_error_before_the_stream_is_shown_in_the_page(web: Server, page: Page) -> None:
    org, password = await new_org_with_login(web, deposit_cents=1_000)
    await open_lab(page, web, org, password)
    await page.get_by_label("Model").select_option("claude-opus-5")
    await page.get_by_label("Message").fill("hello [[sim:status=503]]")
    async with page.expect_response(f"{web.base_url}/{org.slug}/lab/chat") as chat:
        await page.get_by_role("button", name="Send").click()
    assert (await chat.value).status == 503
    await expect(page.locator(".answer").last.get_by_role("alert")).to_have_text(
        "anthropic is overloaded: Simulated fault: 503 Service Unavailable.")
    await expect(page.locator(".answer .meta")).to_have_count(0)
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()

"""Agents: Ala in every org, the agent API, no keys in agents, and calls attributed to agents."""

import secrets

import httpx
import orjson

from harness import Org, Server, data, error

HELLO = [{"role": "user", "content": "hello"}]


async def chat(server: Server, org: Org, agent: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json", **({"X-Alumia-Agent": agent} if agent else {})}
    async with server.api(org.key) as api:
        return await api.post("/v1/chat/completions", headers=headers,
                              content=orjson.dumps({"model": "gpt-5.6-luna", "messages": HELLO}))


async def test_every_org_has_ala_which_can_be_edited_but_not_deleted(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        [ala] = data(await api.get("/api/v1/agents"))["items"]
        assert (ala["name"], ala["slug"], ala["isDefault"]) == ("Ala", "ala", True)
        assert ala["model"] == "gpt-5.6-luna"
        edited = data(await api.patch("/api/v1/agents/ala", json={"systemPrompt": "Be kind.",
                                                                  "model": "claude-haiku-4-5"}))
        assert edited["systemPrompt"] == "Be kind." and edited["model"] == "claude-haiku-4-5"
        assert "cannot be deleted" in error(await api.delete(f"/api/v1/agents/{ala['id']}"), 409, "CONFLICT")


async def test_agent_crud_with_validation_and_soft_delete(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        created = data(await api.post("/api/v1/agents", json={"name": "Support Bot", "model": "gpt-5.6-sol",
                                                              "description": "Answers tickets"}), 201)
        assert created["slug"] == "support-bot" and created["isActive"] is True
        error(await api.post("/api/v1/agents", json={"name": "Support Bot", "model": "gpt-5.6-sol"}),
              409, "CONFLICT")
        error(await api.post("/api/v1/agents", json={"name": "X", "model": "no-such-model"}),
              422, "VALIDATION_ERROR")
        error(await api.post("/api/v1/agents", json={"model": "gpt-5.6-sol"}), 422, "VALIDATION_ERROR")
        error(await api.patch("/api/v1/agents/support-bot", json={"isActive": "no"}), 422, "VALIDATION_ERROR")
        data(await api.delete(f"/api/v1/agents/{created['id']}"))
        error(await api.get(f"/api/v1/agents/{created['id']}"), 404, "NOT_FOUND")
        assert [a["slug"] for a in data(await api.get("/api/v1/agents"))["items"]] == ["ala"]

    member = await server.member_key(org, "member")
    other = await server.new_org()
    async with server.api(member) as as_member, server.api(other.key) as stranger:
        mine = data(await as_member.post("/api/v1/agents", json={"name": "Mine", "model": "gpt-5.6-luna"}),
                    201)
        error(await as_member.delete(f"/api/v1/agents/{mine['id']}"), 403, "FORBIDDEN")
        error(await stranger.get(f"/api/v1/agents/{mine['id']}"), 404, "NOT_FOUND")
        error(await stranger.patch(f"/api/v1/agents/{mine['id']}", json={"name": "x"}), 404, "NOT_FOUND")


async def test_anything_key_like_in_an_agent_is_refused_and_points_to_billing(server: Server) -> None:
    org = await server.new_org()
    key = "sk-ant-test-" + secrets.token_hex(24)
    bodies = [
        {"name": "A", "model": "gpt-5.6-luna", "apiKey": key},
        {"name": "A", "model": "gpt-5.6-luna", "api_key": "anything"},
        {"name": "A", "model": "gpt-5.6-luna", "systemPrompt": f"use {key} for calls"},
        {"name": "A", "model": "gpt-5.6-luna", "description": "sk-proj-test-" + secrets.token_hex(20)},
    ]
    async with server.api(org.key) as api:
        before = data(await api.get("/api/v1/agents"))
        for body in bodies:
            message = error(await api.post("/api/v1/agents", json=body), 422, "VALIDATION_ERROR")
            assert f"/{org.slug}/billing" in message and key not in message
        message = error(await api.patch("/api/v1/agents/ala", json={"systemPrompt": key}), 422,
                        "VALIDATION_ERROR")
        assert "Billing" in message
        assert data(await api.get("/api/v1/agents")) == before


async def test_calls_are_attributed_to_the_agent_named_in_the_header(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        bot = data(await api.post("/api/v1/agents", json={"name": "Bot", "model": "gpt-5.6-luna"}), 201)
    assert (await chat(server, org, "bot")).status_code == 200
    assert (await chat(server, org, bot["id"])).status_code == 200
    assert (await chat(server, org, None)).status_code == 200
    unknown = await chat(server, org, "nobody")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    async with server.api(org.key) as api:
        data(await api.patch("/api/v1/agents/bot", json={"isActive": False}))
        inactive = await chat(server, org, "bot")
        assert inactive.status_code == 409 and inactive.json()["error"]["code"] == "CONFLICT"
        spending = data(await api.get("/api/v1/billing/spending/by-agent"))
    by_agent = {i["agentId"]: i for i in spending["items"]}
    assert by_agent[bot["id"]]["requestCount"] == 2 and by_agent[bot["id"]]["agentName"] == "Bot"
    assert by_agent[None]["requestCount"] == 1
    assert by_agent[bot["id"]]["spentMicrocents"] == 2 * by_agent[None]["spentMicrocents"] > 0


async def test_a_slug_cannot_be_another_agents_id_or_look_like_one(server: Server) -> None:
    org = await server.new_org()
    async with server.api(org.key) as api:
        ala = data(await api.get("/api/v1/agents/ala"))
        for slug in (ala["id"], "0f0e0d0c-0b0a-4908-8706-050403020100"):
            message = error(await api.post("/api/v1/agents", json={
                "name": "Impostor", "model": "gpt-5.6-luna", "slug": slug}), 422, "VALIDATION_ERROR")
            assert message == "slug must not have the shape of an agent id (a UUID)"
        # Nothing was created, and the id still names Ala.
        assert [a["slug"] for a in data(await api.get("/api/v1/agents"))["items"]] == ["ala"]
        assert data(await api.get(f"/api/v1/agents/{ala['id']}"))["slug"] == "ala"
        # A name that slugifies to an id shape is refused the same way.
        error(await api.post("/api/v1/agents", json={"name": ala["id"].upper(), "model": "gpt-5.6-luna"}),
              422, "VALIDATION_ERROR")

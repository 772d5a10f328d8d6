"""security.md checklist 1, for what exists now: a canary provider key never leaks.

Canary keys made at run time are driven through every path that handles a key today: adding, listing,
calls routed through them (JSON and SSE), a key the provider rejects, refused bodies that carry a key,
and deactivation. Then every response (bodies and headers), the server's DEBUG log and a dump of every
row of every table are searched for each key, and for the middle part of it that a mask never shows.

Besides an Anthropic and an OpenAI canary there is a Mistral one: Mistral keys have no prefix, so that
canary has no shape the log filter's patterns know, and a hit for it cannot be hidden by redaction.
"""

import hashlib
import secrets
import string

import httpx
from sqlalchemy import select

from alumia.sim.server import SimServer
from alumia.storage.tables import audit_entries, metadata

from harness import Server

KEYS = "/api/v1/billing/byok-keys"
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "is my key safe here"}]
JSON = {"Content-Type": "application/json"}
OPENAI_MODEL, MISTRAL_MODEL, ANTHROPIC_MODEL = "gpt-5.6-luna", "mistral-large-2512", "claude-opus-5"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def masked(key: str) -> str:
    """The one permitted view of a key of 20 or more characters: first 7, an ellipsis, last 4."""
    return key[:7] + "…" + key[-4:]


def needles(key: str) -> list[str]:
    """What must appear nowhere: the key, and the part of it between what a mask shows."""
    return [key, key[7:-4]]


def canaries() -> dict[str, str]:
    return {
        "anthropic": "sk-ant-test-" + secrets.token_hex(24),
        "openai": "sk-proj-test-" + secrets.token_hex(24),
        "mistral": "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32)),
    }


def invalid_key() -> str:
    """A key the simulator rejects (it refuses any key containing "invalid")."""
    return "sk-proj-invalid-" + secrets.token_hex(20)


class Transcript:
    """Everything the server answered: request lines, statuses, headers and bodies, as one text."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, response: httpx.Response) -> httpx.Response:
        self.parts.append(f"{response.request.method} {response.request.url.path} -> {response.status_code}")
        self.parts.extend(f"{name}: {value}" for name, value in response.headers.items())
        self.parts.append(response.text)
        return response

    def text(self) -> str:
        return "\n".join(self.parts)


async def dump_database(server: Server) -> tuple[str, list[bytes]]:
    """Every row of every table as text, and every binary value (ciphertexts, KEK checks) as bytes."""
    lines: list[str] = []
    blobs: list[bytes] = []
    async with server.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                for column, value in row._mapping.items():
                    if isinstance(value, bytes | bytearray | memoryview):
                        blobs.append(bytes(value))
                    lines.append(f"{table.name}.{column}={value!r}")
    return "\n".join(lines), blobs


async def assert_found_nowhere(server: Server, transcript: Transcript, keys: list[str]) -> None:
    """No key (nor its hidden middle) in any response, the server log, any column or any binary value."""
    answers, log = transcript.text(), server.log_text()
    rows, blobs = await dump_database(server)
    assert log, "the server log is empty: nothing was searched"
    for key in keys:
        for needle in needles(key):
            assert needle not in answers, f"a response carries {needle[:10]}…"
            assert needle not in log, f"the server log carries {needle[:10]}…"
            assert needle not in rows, f"a database row carries {needle[:10]}…"
            assert needle.encode().hex() not in rows
            assert not any(needle.encode() in blob for blob in blobs), "a binary column holds the plaintext"


def chat(model: str, *, stream: bool = False) -> dict:
    return {"model": model, "messages": MESSAGES, "stream": stream}


async def add(api: httpx.AsyncClient, transcript: Transcript, provider: str, key: str) -> dict:
    response = transcript.add(await api.post(KEYS, json={"provider": provider, "apiKey": key}))
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["maskedKey"] == masked(key)
    return data


async def test_canary_keys_never_leak(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    keys = canaries()
    rejected = invalid_key()
    seen = Transcript()
    async with server.api(org.key) as api:
        # Add and list.
        ids = {provider: (await add(api, seen, provider, key))["id"] for provider, key in keys.items()}
        listed = seen.add(await api.get(KEYS))
        assert {k["id"]: k["maskedKey"] for k in listed.json()["data"]["items"]} == {
            ids[p]: masked(keys[p]) for p in keys}

        # Calls the canaries pay for, JSON and SSE.
        for model, provider in ((OPENAI_MODEL, "openai"), (MISTRAL_MODEL, "mistral")):
            for stream in (False, True):
                response = seen.add(await api.post(CHAT, json=chat(model, stream=stream)))
                assert response.status_code == 200, response.text
                assert response.headers["x-alumia-route"] == "byok"
                assert sim.calls()[-1]["keySha256"] == sha(keys[provider])
        for stream in (False, True):
            response = seen.add(await api.post(CHAT, json=chat(ANTHROPIC_MODEL, stream=stream)))
            assert response.status_code == 200 and response.headers["x-alumia-route"] == "byok"
            assert sim.calls()[-1]["keySha256"] == sha(keys["anthropic"])

        # Refused bodies with a canary inside.
        canary = keys["openai"]
        refused = [
            {"provider": "openai", "apiKey": canary + "x" * 600},
            {"provider": "openai", "apiKey": "\x00" + canary},
            {"provider": "openai", "apiKey": canary + "\n" + secrets.token_hex(8)},
            {"provider": "openai", "apiKey": canary + "\x7f"},
            {"provider": "openai", "apiKey": canary + " " + canary},
            {"provider": "anthropic", "apiKey": [keys["anthropic"]]},
            {"provider": keys["mistral"], "apiKey": keys["mistral"]},
            {"apiKey": canary},
        ]
        for body in refused:
            response = seen.add(await api.post(KEYS, json=body))
            assert response.status_code == 422, response.text
        for raw in (b'{"provider": "openai", "apiKey": "' + canary.encode(), f'["{canary}"]'.encode()):
            response = seen.add(await api.post(KEYS, content=raw, headers=JSON))
            assert response.status_code == 400, response.text
        async with server.api(canary) as wrong_credential:
            assert seen.add(await wrong_credential.get(KEYS)).status_code == 401
            assert seen.add(await wrong_credential.post(CHAT, json=chat(OPENAI_MODEL))).status_code == 401

        # A key the provider rejects when it is added: refused, nothing stored.
        refused_at_add = seen.add(await api.post(KEYS, json={"provider": "openai", "apiKey": rejected}))
        assert refused_at_add.status_code == 422, refused_at_add.text
        assert refused_at_add.json()["error"]["code"] == "BYOK_KEY_REJECTED"

        # A key revoked at the provider after it was added: the provider's status and
        # BYOK_KEY_REJECTED on the call, never a fallback to the platform key.
        revoked = "sk-proj-test-" + secrets.token_hex(24)
        ids["rejected"] = (await add(api, seen, "openai", revoked))["id"]
        sim.revoke(revoked)
        before = len(sim.calls())
        for stream in (False, True):
            response = seen.add(await api.post(CHAT, json=chat(OPENAI_MODEL, stream=stream)))
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] == "BYOK_KEY_REJECTED"
        assert [c["keySha256"] for c in sim.calls()[before:]] == [sha(revoked)] * 2

        # Deactivate.
        for key_id in (ids["anthropic"], ids["mistral"], ids["rejected"]):
            response = seen.add(await api.delete(f"{KEYS}/{key_id}"))
            assert response.status_code == 200, response.text

    async with server.db.read() as conn:
        audit = (await conn.execute(select(audit_entries).where(audit_entries.c.org_id == org.id)
                                    .order_by(audit_entries.c.id))).mappings().all()
    assert [(a["action"], a["target_id"], a["masked_key"]) for a in audit] == [
        ("byok_key.added", ids["anthropic"], masked(keys["anthropic"])),
        ("byok_key.added", ids["openai"], masked(keys["openai"])),
        ("byok_key.added", ids["mistral"], masked(keys["mistral"])),
        ("byok_key.replaced", ids["openai"], masked(keys["openai"])),
        ("byok_key.added", ids["rejected"], masked(revoked)),
        ("byok_key.deactivated", ids["anthropic"], masked(keys["anthropic"])),
        ("byok_key.deactivated", ids["mistral"], masked(keys["mistral"])),
        ("byok_key.deactivated", ids["rejected"], masked(revoked)),
    ]
    rows, blobs = await dump_database(server)
    assert all(masked(key) in rows for key in keys.values()), "the dump misses this org's key records"
    assert len(blobs) >= len(ids), "the dump misses the ciphertexts"
    await assert_found_nowhere(server, seen, [*keys.values(), rejected, revoked])


async def test_a_rejected_byok_key_is_reported_and_the_platform_key_never_tried(
        server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    rejected = "sk-proj-test-" + secrets.token_hex(24)
    seen = Transcript()
    async with server.api(org.key) as api:
        await add(api, seen, "openai", rejected)
        sim.revoke(rejected)  # revoked at the provider after it passed the check on add
        before = len(sim.calls())
        responses = [seen.add(await api.post(CHAT, json=chat(OPENAI_MODEL, stream=stream)))
                     for stream in (False, True)]
    for response in responses:
        assert response.status_code == 401, response.text
        body = response.json()
        assert body.keys() == {"error"}, body
        assert body["error"].keys() == {"message", "type", "param", "code"}, body
        assert body["error"]["code"] == "BYOK_KEY_REJECTED"
        assert "openai" in body["error"]["message"]
        assert f"/{org.slug}/billing" in body["error"]["message"]
    # Only the org's key went upstream: no second try with the platform's key.
    assert [c["keySha256"] for c in sim.calls()[before:]] == [sha(rejected)] * 2
    await assert_found_nowhere(server, seen, [rejected])
    for response in responses:
        assert response.headers.get("x-alumia-route") == "byok", dict(response.headers)


async def test_gateway_errors_do_not_echo_a_key_sent_in_the_wrong_place(server: Server) -> None:
    """A key pasted where it does not belong (the bearer, a body field) is refused, never echoed."""
    org = await server.new_org()
    canary = canaries()["openai"]
    seen = Transcript()
    async with server.api(canary) as api:
        assert seen.add(await api.post(CHAT, json=chat(OPENAI_MODEL))).status_code == 401
        assert seen.add(await api.get("/v1/models")).status_code == 401
    async with server.api(org.key) as api:
        for field in ("stream", "max_tokens", "stream_options", "messages"):
            response = seen.add(await api.post(CHAT, json={**chat(OPENAI_MODEL), field: canary}))
            assert response.status_code == 422, response.text
    await assert_found_nowhere(server, seen, [canary])


async def test_an_unknown_model_error_does_not_echo_a_key_sent_as_the_model(server: Server) -> None:
    """design.md: a key's plaintext never reaches an API response or an exception message."""
    org = await server.new_org()
    canary = canaries()["openai"]
    seen = Transcript()
    async with server.api(org.key) as api:
        response = seen.add(await api.post(CHAT, json=chat(canary)))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "NOT_FOUND"
    await assert_found_nowhere(server, seen, [canary])

"""The BYOK keys API over real HTTP: POST/GET /api/v1/billing/byok-keys, DELETE .../byok-keys/{id}.

Every refused request answers the documented envelope with the exact code and status, never echoes the
key it was sent, and changes nothing: the org's key list (as GET shows it) and its audit rows are the
same before and after. The accepted paths check stripping, one active key per provider (which key a
call then uses, seen by the simulator as a SHA-256), idempotent deactivation and re-adding a key.
"""

import hashlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from alumia.sim.server import SimServer
from alumia.storage.tables import audit_entries

from harness import Org, Server, fake_key

KEYS = "/api/v1/billing/byok-keys"
MODEL = "gpt-5.6-luna"  # an openai model: a call to it uses the org's openai key when one is active
MESSAGES = [{"role": "user", "content": "which key paid for this"}]
MAX_KEY = 512


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def masked(key: str) -> str:
    """How the API shows a key of 20 or more characters: first 7, an ellipsis, last 4."""
    return key[:7] + "…" + key[-4:]


def new_key() -> str:
    return fake_key("sk-proj-test-")


# --- helpers ----------------------------------------------------------------------------------------


async def snapshot(server: Server, org: Org, api: httpx.AsyncClient) -> tuple[list[dict], list[dict]]:
    """What a refused request must leave alone: the org's key list as GET shows it, and its audit rows.

    `api` is a client of someone in `org` (the list is the same for every role)."""
    listed = await api.get(KEYS)
    assert listed.status_code == 200, listed.text
    async with server.db.read() as conn:
        rows = await conn.execute(select(audit_entries).where(audit_entries.c.org_id == org.id)
                                  .order_by(audit_entries.c.id))
        audit = [dict(r._mapping) for r in rows]
    return listed.json()["data"]["items"], audit


def _fragments(sent: object) -> list[str]:
    """The key as sent, stripped, and each printable run of 8+ characters (control characters are
    JSON-escaped in a response, so a key containing one could be echoed without matching as a whole)."""
    if not isinstance(sent, str) or not sent.strip():
        return []
    return [sent, sent.strip(), *(part for part in re.split(r"[^!-~]+", sent) if len(part) >= 8)]


def assert_envelope_error(response: httpx.Response, status: int, code: str, *sent: object) -> None:
    """`{"success": false, "error": {"code", "message"}}` with this status and code, echoing nothing sent."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body.keys() == {"success", "error"} and body["success"] is False, body
    assert body["error"].keys() == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message, body
    for fragment in (f for value in sent for f in _fragments(value)):
        assert fragment not in response.text, f"the response echoes the key: {response.text}"
        assert fragment not in message, f"the message echoes the key: {message!r}"


async def add_key(api: httpx.AsyncClient, key: str, provider: str = "openai") -> dict:
    """POST a key that must be accepted; the answer shows its mask, never the key."""
    response = await api.post(KEYS, json={"provider": provider, "apiKey": key})
    assert response.status_code == 201, response.text
    assert key.strip() not in response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


async def list_keys(api: httpx.AsyncClient) -> dict[str, dict]:
    """The org's keys by id."""
    response = await api.get(KEYS)
    assert response.status_code == 200, response.text
    return {k["id"]: k for k in response.json()["data"]["items"]}


async def call_model(server: Server, org: Org) -> str:
    """One call with the official client; the route the gateway reports."""
    async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=org.key, max_retries=0) as oa:
        raw = await oa.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-alumia-route"]


@pytest.fixture(scope="module")
async def org(server: Server) -> Org:
    """An org shared by this module's tests, with an active openai key a bad add could disturb.

    Tests that need a known history (which key a call uses, the exact audit trail) make their own."""
    org = await server.new_org()
    async with server.api(org.key) as api:
        await add_key(api, new_key())
    return org


@pytest.fixture(scope="module")
async def owner(server: Server, org: Org) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the shared org's owner."""
    async with server.api(org.key) as api:
        yield api


# --- refused requests change nothing ----------------------------------------------------------------

Body = Callable[[str], dict[str, Any]]

VALIDATION_CASES: list[tuple[str, Body]] = [
    ("unknown-provider", lambda k: {"provider": "openia", "apiKey": k}),
    ("provider-is-the-key", lambda k: {"provider": k, "apiKey": k}),
    ("provider-missing", lambda k: {"apiKey": k}),
    ("apikey-missing", lambda k: {"provider": "openai"}),
    ("apikey-empty", lambda k: {"provider": "openai", "apiKey": ""}),
    ("apikey-whitespace-only", lambda k: {"provider": "openai", "apiKey": " \t\n  "}),
    ("apikey-nul-inside", lambda k: {"provider": "openai", "apiKey": k[:20] + "\x00" + k[20:]}),
    ("apikey-newline-inside", lambda k: {"provider": "openai", "apiKey": k[:20] + "\n" + k[20:]}),
    ("apikey-del-inside", lambda k: {"provider": "openai", "apiKey": k[:20] + "\x7f" + k[20:]}),
    ("apikey-zero-width-space", lambda k: {"provider": "openai", "apiKey": k[:20] + "\u200b" + k[20:]}),
    ("apikey-inner-space", lambda k: {"provider": "openai", "apiKey": k[:20] + " " + k[20:]}),
    ("apikey-513-chars", lambda k: {"provider": "openai", "apiKey": (k + "A" * MAX_KEY)[:MAX_KEY + 1]}),
    ("apikey-number", lambda k: {"provider": "openai", "apiKey": 12345}),
    ("apikey-null", lambda k: {"provider": "openai", "apiKey": None}),
    ("apikey-bool", lambda k: {"provider": "openai", "apiKey": True}),
    ("apikey-list", lambda k: {"provider": "openai", "apiKey": [k]}),
    ("apikey-object", lambda k: {"provider": "openai", "apiKey": {"key": k}}),
    ("provider-number", lambda k: {"provider": 7, "apiKey": k}),
    ("provider-null", lambda k: {"provider": None, "apiKey": k}),
    ("provider-list", lambda k: {"provider": ["openai"], "apiKey": k}),
]


@pytest.mark.parametrize("make_body", [c[1] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES])
async def test_invalid_body_is_422_and_changes_nothing(server: Server, org: Org, owner: httpx.AsyncClient,
                                                       make_body: Body) -> None:
    key = new_key()
    body = make_body(key)
    before = await snapshot(server, org, owner)
    response = await owner.post(KEYS, json=body)
    assert_envelope_error(response, 422, "VALIDATION_ERROR", key, body.get("apiKey"), body.get("provider"))
    assert await snapshot(server, org, owner) == before


RAW_CASES: list[tuple[str, Callable[[str], bytes]]] = [
    ("malformed-json", lambda k: b'{"provider": "openai", "apiKey": "' + k.encode() + b'"'),
    ("json-array", lambda k: b'[{"provider": "openai", "apiKey": "' + k.encode() + b'"}]'),
    ("json-string", lambda k: b'"' + k.encode() + b'"'),
    ("empty-body", lambda k: b""),
    ("not-utf8", lambda k: b'{"provider": "openai", "apiKey": "\xff' + k.encode() + b'"}'),
]


@pytest.mark.parametrize("make_raw", [c[1] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
async def test_unreadable_body_is_400_and_changes_nothing(server: Server, org: Org, owner: httpx.AsyncClient,
                                                          make_raw: Callable[[str], bytes]) -> None:
    key = new_key()
    before = await snapshot(server, org, owner)
    response = await owner.post(KEYS, content=make_raw(key), headers={"Content-Type": "application/json"})
    assert_envelope_error(response, 400, "BAD_REQUEST", key)
    assert await snapshot(server, org, owner) == before


async def test_bad_credentials_are_401_and_change_nothing(server: Server, org: Org,
                                                         owner: httpx.AsyncClient) -> None:
    key_id = next(iter(await list_keys(owner)))
    credentials = {"no-authorization": None,
                   "unknown-alm-key": "alm_test_" + secrets.token_hex(24),
                   "provider-key-as-bearer": new_key()}
    for label, credential in credentials.items():
        key = new_key()
        before = await snapshot(server, org, owner)
        async with server.api(credential) as api:
            responses = [await api.get(KEYS),
                         await api.post(KEYS, json={"provider": "openai", "apiKey": key}),
                         await api.delete(f"{KEYS}/{key_id}")]
        for response in responses:
            assert_envelope_error(response, 401, "UNAUTHORIZED", key, credential)
        assert await snapshot(server, org, owner) == before, label


async def test_member_reads_but_cannot_add_or_deactivate(server: Server, org: Org,
                                                        owner: httpx.AsyncClient) -> None:
    key = new_key()
    before = await snapshot(server, org, owner)
    active_id = next(k["id"] for k in before[0] if k["status"] == "active")
    async with server.api(await server.member_key(org, "member")) as member:
        listed = await member.get(KEYS)
        added = await member.post(KEYS, json={"provider": "openai", "apiKey": key})
        incomplete = await member.post(KEYS, json={"provider": "openai"})
        deactivated = await member.delete(f"{KEYS}/{active_id}")
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"]["items"] == before[0]
    assert_envelope_error(added, 403, "FORBIDDEN", key)
    # The permission is checked before the body: a member learns nothing from validation messages.
    assert_envelope_error(incomplete, 403, "FORBIDDEN")
    assert_envelope_error(deactivated, 403, "FORBIDDEN")
    assert await snapshot(server, org, owner) == before


async def test_admin_can_add_and_deactivate(server: Server, org: Org) -> None:
    key = new_key()
    async with server.api(await server.member_key(org, "admin")) as admin:
        added = await add_key(admin, key, provider="deepseek")
        gone = await admin.delete(f"{KEYS}/{added['id']}")
    assert added["status"] == "active" and added["provider"] == "deepseek"
    assert added["maskedKey"] == masked(key)
    assert gone.status_code == 200, gone.text
    assert gone.json()["data"]["status"] == "inactive"


async def test_another_orgs_key_and_unknown_ids_are_404(server: Server, org: Org,
                                                        owner: httpx.AsyncClient) -> None:
    other = await server.new_org()
    async with server.api(other.key) as theirs_api:
        theirs = await add_key(theirs_api, new_key())
        their_before = await snapshot(server, other, theirs_api)
        before = await snapshot(server, org, owner)
        for key_id in (theirs["id"], str(uuid.uuid4()), "not-a-key-id"):
            assert_envelope_error(await owner.delete(f"{KEYS}/{key_id}"), 404, "NOT_FOUND")
        assert await snapshot(server, org, owner) == before
        assert await snapshot(server, other, theirs_api) == their_before
    assert [k["status"] for k in their_before[0] if k["id"] == theirs["id"]] == ["active"]
    assert theirs["id"] not in {k["id"] for k in before[0]}


# --- accepted requests ------------------------------------------------------------------------------


async def test_exactly_512_printable_characters_are_accepted(owner: httpx.AsyncClient) -> None:
    printable = "".join(chr(c) for c in range(ord("!"), ord("~") + 1))
    key = (new_key() + "".join(secrets.choice(printable) for _ in range(MAX_KEY)))[:MAX_KEY]
    added = await add_key(owner, key, provider="xai")
    assert added["status"] == "active" and added["maskedKey"] == masked(key)


async def test_deactivating_twice_is_idempotent(server: Server, org: Org, owner: httpx.AsyncClient) -> None:
    added = await add_key(owner, new_key(), provider="moonshot")
    first = await owner.delete(f"{KEYS}/{added['id']}")
    second = await owner.delete(f"{KEYS}/{added['id']}")
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["data"]["status"] == second.json()["data"]["status"] == "inactive"
    assert first.json()["data"]["deactivatedAt"] is not None
    assert first.json()["data"]["deactivatedAt"] == second.json()["data"]["deactivatedAt"]
    _, audit = await snapshot(server, org, owner)
    assert [a["action"] for a in audit if a["target_id"] == added["id"]] == [
        "byok_key.added", "byok_key.deactivated"]


async def test_surrounding_whitespace_is_stripped(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    key = new_key()
    async with server.api(org.key) as api:
        added = await add_key(api, f" \t\n {key} \r\n\t")
    assert added["maskedKey"] == masked(key)
    assert await call_model(server, org) == "byok"
    assert sim.calls()[-1]["keySha256"] == sha(key)


async def test_a_second_key_for_a_provider_replaces_the_first(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    first_key, second_key = new_key(), new_key()
    async with server.api(org.key) as api:
        first = await add_key(api, first_key)
        second = await add_key(api, second_key)
        by_id = await list_keys(api)
        _, audit = await snapshot(server, org, api)
    assert by_id.keys() == {first["id"], second["id"]}
    assert by_id[first["id"]]["status"] == "inactive" and by_id[first["id"]]["deactivatedAt"]
    assert by_id[second["id"]]["status"] == "active" and by_id[second["id"]]["deactivatedAt"] is None
    assert by_id[second["id"]]["maskedKey"] == masked(second_key)
    assert [(a["action"], a["target_id"]) for a in audit] == [
        ("byok_key.added", first["id"]), ("byok_key.replaced", first["id"]), ("byok_key.added", second["id"])]

    assert await call_model(server, org) == "byok"
    assert sim.calls()[-1]["keySha256"] == sha(second_key)


async def test_a_deactivated_key_can_be_added_again(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    key = new_key()
    async with server.api(org.key) as api:
        added = await add_key(api, key)
        assert (await api.delete(f"{KEYS}/{added['id']}")).status_code == 200
        assert await call_model(server, org) == "platform"
        assert sim.calls()[-1]["keySha256"] == sha(server.platform_key("openai"))

        again = await add_key(api, key)
        assert again["status"] == "active" and again["id"] != added["id"]
        assert again["maskedKey"] == masked(key)
        assert await call_model(server, org) == "byok"
        assert sim.calls()[-1]["keySha256"] == sha(key)
        statuses = {k["id"]: k["status"] for k in (await list_keys(api)).values()}
    assert statuses == {added["id"]: "inactive", again["id"]: "active"}

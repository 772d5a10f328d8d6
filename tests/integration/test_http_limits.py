"""Request bodies cannot stall or swell the server, on every route that takes one.

Each request here goes over a plain socket, piece by piece, so a test controls what the server has
been sent when it answers: a body over its limit is refused once the handler asks for it (after the
key is checked) and before it is sent; a chunked one is cut while it streams; one that does not
arrive in time is refused with 408; and past the concurrency limit a request gets 503 at once.
"""

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import h11
import httpx
import orjson
import pytest

from alumia.config import Settings
from alumia.sim.env import sim_env
from alumia.sim.server import SimServer

from harness import Org, Server, new_org_with_login, running_server

READ_TIMEOUT = 1.0  # the server's body read timeout in this module
MAX_CONCURRENT = 4
DEFAULTS = Settings.from_env({})  # the module's server keeps the default limits
GATEWAY_LIMIT, API_LIMIT = DEFAULTS.gateway_body_limit_bytes, DEFAULTS.api_body_limit_bytes
WEBHOOK_LIMIT, PAGE_LIMIT = DEFAULTS.webhook_body_limit_bytes, DEFAULTS.page_body_limit_bytes
LOGIN_LIMIT = DEFAULTS.login_body_limit_bytes
HUGE = 256 << 20  # the body of the attack as found: 256 MiB
ANSWER_WITHIN = 10.0  # generous: the defect is "never" (or after the whole body)
FREE_MODEL = "llama-3.3-70b-versatile"  # groq: free, so no balance is needed
FIRST = b'{"model": "gpt-'  # what is sent of a huge body before the answer is awaited


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def srv(request: pytest.FixtureRequest, sim: SimServer,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A server with a short read timeout and a small concurrency limit, on each backend."""
    data_dir = tmp_path_factory.mktemp(f"alumia-limits-{request.param}")
    env = {**sim_env(sim.host, sim.port), "ALUMIA_BODY_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
           "ALUMIA_MAX_CONCURRENT_REQUESTS": str(MAX_CONCURRENT)}
    async with running_server(request.param, data_dir, env, f"limits-{request.param}") as server:
        yield server


def test_the_default_limits() -> None:
    """The gateway keeps the 8 MiB it had; the others are smaller; all are settings."""
    assert (GATEWAY_LIMIT, API_LIMIT, WEBHOOK_LIMIT, PAGE_LIMIT, LOGIN_LIMIT) == (
        8 << 20, 1 << 20, 256 << 10, 512 << 10, 16 << 10)
    assert (DEFAULTS.body_read_timeout_seconds, DEFAULTS.max_concurrent_requests) == (30.0, 1024)
    custom = Settings.from_env({"ALUMIA_GATEWAY_BODY_LIMIT_BYTES": "1000",
                                "ALUMIA_MAX_CONCURRENT_REQUESTS": "7",
                                "ALUMIA_BODY_READ_TIMEOUT_SECONDS": "2.5"})
    assert (custom.gateway_body_limit_bytes, custom.max_concurrent_requests,
            custom.body_read_timeout_seconds) == (1000, 7, 2.5)


@dataclass
class Login:
    """An org and its owner's signed-in dashboard session."""

    org: Org
    cookie: str
    csrf: str


@pytest.fixture(scope="module")
async def login(srv: Server) -> Login:
    """Sign in through /login as a browser would, for the page forms."""
    org, password = await new_org_with_login(srv)
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as web:
        form = await web.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        signed = await web.post("/login", headers={"Origin": srv.base_url},
                                data={"csrf_token": token[1], "email": org.owner_email, "password": password})
        assert signed.status_code == 303, signed.text
        page = await web.get(f"/{org.slug}/billing")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert page.status_code == 200 and csrf is not None
        cookie = "; ".join(f"{name}={value}" for name, value in web.cookies.items())
    return Login(org=org, cookie=cookie, csrf=csrf[1])


@dataclass
class Answer:
    """A response as h11 read it."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return orjson.loads(self.body)


class RawRequest:
    """One HTTP/1.1 request on its own connection, its body sent piece by piece."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._h11 = h11.Connection(h11.CLIENT)
        self.sent = 0  # body bytes written to the socket so far

    @classmethod
    async def open(cls, server: Server, method: str, path: str, headers: dict[str, str]) -> "RawRequest":
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = cls(reader, writer)
        head = [("Host", f"127.0.0.1:{server.port}"), *headers.items()]
        writer.write(request._h11.send(h11.Request(method=method, target=path, headers=head)))
        await writer.drain()
        return request

    async def send(self, data: bytes) -> bool:
        """Write part of the body; False once the server has closed the connection."""
        try:
            self._writer.write(self._h11.send(h11.Data(data=data)))
            await self._writer.drain()
        except (ConnectionError, OSError):
            return False
        self.sent += len(data)
        return True

    async def answer(self, within: float = ANSWER_WITHIN) -> Answer:
        """The server's response, which must come within `within` seconds whatever was sent."""
        async with asyncio.timeout(within):
            response, body = None, b""
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    try:
                        chunk = await self._reader.read(65536)
                    except ConnectionError:
                        chunk = b""
                    self._h11.receive_data(chunk)
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
        assert response is not None
        headers = {name.decode().lower(): value.decode() for name, value in response.headers}
        return Answer(response.status_code, headers, body)

    def close(self) -> None:
        self._writer.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def declared_huge(server: Server, path: str, headers: dict[str, str],
                        content_type: str = "application/json") -> tuple[Answer, int]:
    """Declare a 256 MiB body, send its first few bytes, and take the answer; also the bytes sent by then."""
    request = await RawRequest.open(server, "POST", path, {**headers, "Content-Type": content_type,
                                                            "Content-Length": str(HUGE)})
    try:
        assert await request.send(FIRST)
        return await request.answer(), request.sent
    finally:
        request.close()


async def chunked_past(server: Server, path: str, headers: dict[str, str], limit: int,
                       content_type: str = "application/json") -> tuple[Answer, int]:
    """A chunked body of up to limit + 32 MiB, never ended, sent while the answer is awaited: the answer
    and the bytes sent by then."""
    total = limit + (32 << 20)
    request = await RawRequest.open(server, "POST", path, {**headers, "Content-Type": content_type,
                                                            "Transfer-Encoding": "chunked"})
    answered = asyncio.Event()

    async def write() -> None:
        piece = b" " * 65536
        while request.sent < total and not answered.is_set() and await request.send(piece):
            pass

    writing = asyncio.create_task(write())
    try:
        answer = await request.answer()
        answered.set()
        await writing
        return answer, request.sent
    finally:
        writing.cancel()
        request.close()


def assert_openai_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer.body[:300]
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert answer.headers["x-alumia-request-id"]


def assert_anthropic_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer.body[:300]
    body = answer.json()
    assert body["type"] == "error" and body["error"]["code"] == code
    assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str)
    assert answer.headers["x-alumia-request-id"]


def assert_envelope_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer.body[:300]
    body = answer.json()
    assert body["success"] is False and body["error"]["code"] == code


def assert_page_error(answer: Answer, status: int) -> None:
    assert answer.status == status, answer.body[:300]
    assert answer.headers["content-type"].startswith("text/html")


# The routes that take a body with an API key, and the shape of their errors.
KEYED = [("/v1/chat/completions", assert_openai_error, GATEWAY_LIMIT),
         ("/v1/messages", assert_anthropic_error, GATEWAY_LIMIT),
         ("/api/v1/billing/byok-keys", assert_envelope_error, API_LIMIT),
         ("/api/v1/agents", assert_envelope_error, API_LIMIT)]
KEYED_IDS = [path for path, _, _ in KEYED]


@pytest.mark.parametrize(("path", "check", "_limit"), KEYED, ids=KEYED_IDS)
async def test_a_stranger_with_a_huge_body_gets_401_before_sending_it(srv: Server, path: str, check,
                                                                     _limit: int) -> None:
    answer, sent = await declared_huge(srv, path, {})
    check(answer, 401, "UNAUTHORIZED")
    assert sent == len(FIRST)
    assert answer.headers["connection"] == "close"  # the rest of the body is not read


@pytest.mark.parametrize(("path", "check", "_limit"), KEYED, ids=KEYED_IDS)
async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
        srv: Server, path: str, check, _limit: int) -> None:
    org = await srv.new_org()
    answer, sent = await declared_huge(srv, path, bearer(org.key))
    check(answer, 413, "PAYLOAD_TOO_LARGE")
    assert sent == len(FIRST)
    assert answer.headers["connection"] == "close"


@pytest.mark.parametrize(("path", "check", "limit"), KEYED, ids=KEYED_IDS)
async def test_a_chunked_body_is_cut_at_the_limit(srv: Server, path: str, check, limit: int) -> None:
    org = await srv.new_org()
    answer, sent = await chunked_past(srv, path, bearer(org.key), limit)
    check(answer, 413, "PAYLOAD_TOO_LARGE")
    # Answered past the limit, and while the body was still open (it is never ended): a server that
    # waited for the whole body would never answer. (Whether the client had sent all of `total` by
    # then depends on the machine's load, so that is not asserted.)
    assert limit < sent


async def test_the_webhook_takes_only_a_small_body(srv: Server) -> None:
    path = "/api/v1/billing/webhooks/stripe"
    answer, sent = await declared_huge(srv, path, {"Stripe-Signature": "t=1,v1=00"})
    assert_envelope_error(answer, 413, "PAYLOAD_TOO_LARGE")
    assert sent == len(FIRST)
    answer, sent = await chunked_past(srv, path, {"Stripe-Signature": "t=1,v1=00"}, WEBHOOK_LIMIT)
    assert_envelope_error(answer, 413, "PAYLOAD_TOO_LARGE")
    assert sent > WEBHOOK_LIMIT


async def test_page_forms_check_the_session_then_take_only_a_small_body(srv: Server, login: Login) -> None:
    path, form = f"/{login.org.slug}/billing/byok-keys", "application/x-www-form-urlencoded"
    # Without a session: to /login, without reading the body.
    answer, sent = await declared_huge(srv, path, {"Origin": srv.base_url}, form)
    assert (answer.status, answer.headers["location"], sent) == (303, "/login", len(FIRST))
    signed_in = {"Origin": srv.base_url, "Cookie": login.cookie}
    answer, sent = await declared_huge(srv, path, signed_in, form)
    assert_page_error(answer, 413)
    assert sent == len(FIRST)
    answer, sent = await chunked_past(srv, path, signed_in, PAGE_LIMIT, form)
    assert_page_error(answer, 413)
    assert sent > PAGE_LIMIT


async def test_the_login_form_takes_only_a_small_body(srv: Server) -> None:
    form = "application/x-www-form-urlencoded"
    answer, sent = await declared_huge(srv, "/login", {"Origin": srv.base_url}, form)
    assert_page_error(answer, 413)
    assert sent == len(FIRST)
    answer, sent = await chunked_past(srv, "/login", {"Origin": srv.base_url}, LOGIN_LIMIT, form)
    assert_page_error(answer, 413)
    assert sent > LOGIN_LIMIT


STALLED = [("/v1/chat/completions", assert_openai_error), ("/v1/messages", assert_anthropic_error),
           ("/api/v1/billing/byok-keys", assert_envelope_error),
           ("/api/v1/billing/webhooks/stripe", assert_envelope_error)]


@pytest.mark.parametrize(("path", "check"), STALLED, ids=[path for path, _ in STALLED])
async def test_a_body_that_stalls_is_refused_with_408(srv: Server, path: str, check) -> None:
    org = await srv.new_org()
    request = await RawRequest.open(srv, "POST", path, {**bearer(org.key), "Content-Type": "application/json",
                                                        "Content-Length": "1000"})
    try:
        started = time.monotonic()
        assert await request.send(b'{"model"')
        answer = await request.answer()
        waited = time.monotonic() - started
    finally:
        request.close()
    check(answer, 408, "REQUEST_TIMEOUT")
    assert answer.headers["connection"] == "close"
    assert waited >= READ_TIMEOUT * 0.9  # the server did wait for the body


async def test_a_body_sent_a_byte_at_a_time_is_refused_within_the_timeout(srv: Server) -> None:
    """The timeout is for the whole body: a byte now and then does not keep the request open."""
    org = await srv.new_org()
    request = await RawRequest.open(srv, "POST", "/v1/chat/completions",
                                    {**bearer(org.key), "Content-Type": "application/json",
                                     "Content-Length": "1000"})

    async def drip() -> None:
        for _ in range(1000):
            if not await request.send(b" "):
                return
            await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    try:
        answer = await request.answer()
    finally:
        dripping.cancel()
        request.close()
    assert_openai_error(answer, 408, "REQUEST_TIMEOUT")
    assert request.sent < 1000


def vm_hwm_kib(server: Server) -> int:
    """The server process's peak resident memory (VmHWM), in KiB."""
    pid = server._process.pid  # type: ignore[union-attr]  # `alumia serve` with one worker: the server
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None
    return int(match[1])


async def test_a_256_mib_body_does_not_grow_the_server(srv: Server) -> None:
    """The attack as found (memory 190 -> 649 MB): the whole body sent, with and without a key."""
    org = await srv.new_org()
    before = vm_hwm_kib(srv)
    outcomes = []
    for headers in ({}, bearer(org.key)):
        request = await RawRequest.open(srv, "POST", "/v1/chat/completions",
                                        {**headers, "Content-Type": "application/json",
                                         "Content-Length": str(HUGE)})
        piece = b" " * (1 << 20)
        answered = asyncio.create_task(request.answer(within=60))
        while request.sent < HUGE and not answered.done() and await request.send(piece):
            pass
        outcomes.append(((await answered).status, request.sent < HUGE))
        request.close()
    grown_mib = (vm_hwm_kib(srv) - before) / 1024
    assert grown_mib < 64, f"the server's peak memory grew by {grown_mib:.0f} MiB"
    # Refused (401 without a key once the gateway checks it first, else 413) before the body was all sent.
    assert [sent_less for _, sent_less in outcomes] == [True, True]
    assert outcomes[1][0] == 413 and outcomes[0][0] in (401, 413)


async def test_past_the_concurrency_limit_a_request_gets_503_at_once(srv: Server, sim: SimServer,
                                                                    login: Login) -> None:
    org = await srv.new_org()
    held_body = {"model": FREE_MODEL, "messages": [{"role": "user", "content": "wait [[sim:hold]]"}]}
    async with srv.api(org.key) as api:
        held = [asyncio.create_task(api.post("/v1/chat/completions", json=held_body))
                for _ in range(MAX_CONCURRENT)]
        try:
            deadline = time.monotonic() + 30
            while await asyncio.to_thread(sim.held) < MAX_CONCURRENT:
                assert time.monotonic() < deadline, "the held calls did not reach the simulator"
                await asyncio.sleep(0.05)
            body = {"model": FREE_MODEL, "messages": [{"role": "user", "content": "hi"}]}
            chat = await api.post("/v1/chat/completions", json=body)
            messages = await api.post("/v1/messages", json={**body, "max_tokens": 10})
            billing = await api.get("/api/v1/billing")
            page = await api.get(f"/{login.org.slug}/billing", headers={"Cookie": login.cookie})
        finally:
            assert await asyncio.to_thread(sim.release) == MAX_CONCURRENT
        assert [r.status_code for r in await asyncio.gather(*held)] == [200] * MAX_CONCURRENT
        after = await api.post("/v1/chat/completions", json=body)
    for response in (chat, messages, billing, page):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
    assert_openai_error(answer_of(chat), 503, "SERVICE_UNAVAILABLE")
    assert_anthropic_error(answer_of(messages), 503, "SERVICE_UNAVAILABLE")
    assert messages.json()["error"]["type"] == "overloaded_error"
    assert_envelope_error(answer_of(billing), 503, "SERVICE_UNAVAILABLE")
    assert page.headers["content-type"].startswith("text/html")
    assert after.status_code == 200, after.text  # the slots are free again


async def test_a_client_sending_a_large_body_at_once_reads_the_refusal(srv: Server) -> None:
    """As an SDK sends: the whole body without waiting. The answer arrives, not a reset connection."""
    org = await srv.new_org()
    body = b'{"model": "gpt-5.6-luna", "messages": []' + b" " * GATEWAY_LIMIT + b"}"
    async with srv.api(org.key) as api, httpx.AsyncClient(base_url=srv.base_url, timeout=30) as stranger:
        for _ in range(3):
            assert_openai_error(answer_of(await api.post("/v1/chat/completions", content=body)),
                                413, "PAYLOAD_TOO_LARGE")
            refused = await stranger.post("/api/v1/billing/byok-keys", content=body)
            assert_envelope_error(answer_of(refused), 401, "UNAUTHORIZED")


def answer_of(response: httpx.Response) -> Answer:
    return Answer(response.status_code, dict(response.headers), response.content)

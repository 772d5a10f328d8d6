"""Sign-in throttling over real HTTP: back-off, then a lock, per account and per address.

Each test signs in from client addresses of its own (127.x.y.z all reach the server), so the address
log of one test never throttles another. The numbers are small so the back-offs take seconds.
"""

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from alumia.sim.env import sim_env
from alumia.sim.server import SimServer

from harness import Server, new_org_with_login, running_server
from login_form import form_client, submit_login

THROTTLE = {"ALUMIA_SIGNIN_ACCOUNT_FREE_FAILURES": "3", "ALUMIA_SIGNIN_ACCOUNT_LOCK_FAILURES": "5",
            "ALUMIA_SIGNIN_ADDRESS_FREE_FAILURES": "6", "ALUMIA_SIGNIN_ADDRESS_LOCK_FAILURES": "8",
            # 2 s, then 4 s: an exact Retry-After even when a check takes most of a second here.
            "ALUMIA_SIGNIN_BACKOFF_BASE_SECONDS": "2", "ALUMIA_SIGNIN_LOCK_SECONDS": "900",
            "ALUMIA_SIGNIN_WINDOW_SECONDS": "900"}
WRONG = "not-the-password"
_TIME = re.compile(r"\(after \d\d:\d\d:\d\d UTC\)")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def throttled(request: pytest.FixtureRequest, sim: SimServer,
                    tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A server of this module's own with small throttle numbers, on each backend."""
    data_dir = tmp_path_factory.mktemp(f"alumia-throttle-{request.param}")
    async with running_server(request.param, data_dir, {**sim_env(sim.host, sim.port), **THROTTLE},
                              f"throttle-{request.param}") as srv:
        yield srv


@pytest.fixture(scope="module")
def blocks() -> Iterator[int]:
    """Second octets of 127.x.y.z, each handed out once in this module."""
    return itertools.count(20)


class Addresses:
    """Fresh client addresses 127.<block>.<k>.1 in a block no other test uses."""

    def __init__(self, blocks: Iterator[int]) -> None:
        self._block, self._next = next(blocks), 0

    def fresh(self) -> str:
        """An address that has not signed in yet."""
        self._next += 1
        return f"127.{self._block}.{self._next}.1"


async def attempt(server: Server, email: str, password: str, address: str,
                  headers: dict[str, str] | None = None) -> httpx.Response:
    async with form_client(server.base_url, address) as client:
        return await submit_login(client, email, password, headers)


def shown(response: httpx.Response) -> str:
    """The message the login page shows."""
    match = re.search(r'<p class="error" role="alert">([^<]*)</p>', response.text)
    assert match, response.text
    return match.group(1)


def assert_throttled(response: httpx.Response, retry_after: int, in_words: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    assert re.fullmatch(rf"too many failed sign-in attempts; try again in {in_words} "
                        r"\(after \d\d:\d\d:\d\d UTC\)", shown(response))
    assert 'name="csrf_token"' in response.text  # the form is there to try again
    assert "alumia_session" not in response.headers.get("set-cookie", "")


async def test_an_account_backs_off_then_locks_even_for_the_right_password(throttled: Server,
                                                                          blocks: Iterator[int]) -> None:
    org, password = await new_org_with_login(throttled)
    at = Addresses(blocks)  # a new address for every attempt: only the account's rule is at work
    for _ in range(3):
        assert (await attempt(throttled, org.owner_email, WRONG, at.fresh())).status_code == 401
    assert_throttled(await attempt(throttled, org.owner_email, password, at.fresh()), 2, "2 seconds")
    await asyncio.sleep(2.1)
    signed_in = await attempt(throttled, org.owner_email, password, at.fresh())
    assert signed_in.status_code == 303 and signed_in.headers["location"] == f"/{org.slug}/billing"
    # The success started the account afresh: three failures are free again, then 2 s, then 4 s, then locked.
    for _ in range(3):
        assert (await attempt(throttled, org.owner_email, WRONG, at.fresh())).status_code == 401
    assert_throttled(await attempt(throttled, org.owner_email, WRONG, at.fresh()), 2, "2 seconds")
    await asyncio.sleep(2.1)
    assert (await attempt(throttled, org.owner_email, WRONG, at.fresh())).status_code == 401
    assert_throttled(await attempt(throttled, org.owner_email, password, at.fresh()), 4, "4 seconds")
    await asyncio.sleep(4.1)
    assert (await attempt(throttled, org.owner_email, WRONG, at.fresh())).status_code == 401
    assert_throttled(await attempt(throttled, org.owner_email, password, at.fresh()), 900, "15 minutes")


async def _to_the_lock(server: Server, email: str, at: Addresses) -> list[tuple[int, str | None, str]]:
    """Failures on `email` until it is locked: each answer's status, Retry-After and message."""
    seen = []
    for pause in (0, 0, 0, 0, 2.1, 0, 4.1, 0, 0):
        await asyncio.sleep(pause)
        response = await attempt(server, email, WRONG, at.fresh())
        message = _TIME.sub("", shown(response))
        seen.append((response.status_code, response.headers.get("retry-after"), message))
    return seen


async def test_the_lock_does_not_tell_whether_the_email_exists(throttled: Server,
                                                               blocks: Iterator[int]) -> None:
    org, _password = await new_org_with_login(throttled)
    nobody = f"nobody@{org.slug}.test"
    known, unknown = await asyncio.gather(_to_the_lock(throttled, org.owner_email, Addresses(blocks)),
                                          _to_the_lock(throttled, nobody, Addresses(blocks)))
    assert known == unknown
    assert [status for status, _, _ in known] == [401, 401, 401, 429, 401, 429, 401, 429, 429]
    assert known[-1][1] == "900"


async def test_an_address_backs_off_then_locks_across_accounts(throttled: Server,
                                                               blocks: Iterator[int]) -> None:
    org, password = await new_org_with_login(throttled)
    address = Addresses(blocks).fresh()
    for i in range(6):  # a different, unknown email each time: only the address's rule is at work
        assert (await attempt(throttled, f"guess{i}@{org.slug}.test", WRONG, address)).status_code == 401
    # The owner's account is clean, but the address must wait, for the right password too.
    assert_throttled(await attempt(throttled, org.owner_email, password, address), 2, "2 seconds")
    await asyncio.sleep(2.1)
    ok = await attempt(throttled, org.owner_email, password, address)
    assert ok.status_code == 303
    # A success does not reset the address (one good account must not let it keep guessing at others).
    assert_throttled(await attempt(throttled, "guess-more@example.test", WRONG, address), 2, "2 seconds")
    await asyncio.sleep(2.1)
    assert (await attempt(throttled, f"guess6@{org.slug}.test", WRONG, address)).status_code == 401
    await asyncio.sleep(4.1)
    assert (await attempt(throttled, f"guess7@{org.slug}.test", WRONG, address)).status_code == 401
    assert_throttled(await attempt(throttled, org.owner_email, password, address), 900, "15 minutes")
    # X-Forwarded-For is not believed: naming another client does not get past the lock.
    spoofed = await attempt(throttled, org.owner_email, password, address,
                            headers={"X-Forwarded-For": "198.51.100.23"})
    assert_throttled(spoofed, 900, "15 minutes")
    # Another address signs the same owner in.
    assert (await attempt(throttled, org.owner_email, password, Addresses(blocks).fresh())).status_code == 303

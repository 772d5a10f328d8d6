"""The per-app sign-in guard (services/sign_in_guard.py): both logs, answers, and the size bound."""

import hashlib
import re

import pytest

from alumia.config import Settings
from alumia.domain.throttle import ThrottleRule
from alumia.errors import AppError
from alumia.services.sign_in_guard import FailureLog, SignInGuard


class FakeClock:
    """Seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rule(free: int, lock: int) -> ThrottleRule:
    return ThrottleRule(free_failures=free, lock_failures=lock, window_seconds=900, lock_seconds=900,
                        base_delay_seconds=1, max_delay_seconds=30)


def guard(clock: FakeClock, *, account: tuple[int, int] = (5, 10), address: tuple[int, int] = (20, 50),
          size: int = 1000) -> SignInGuard:
    return SignInGuard(FailureLog(rule(*account), size), FailureLog(rule(*address), size), clock)


def refused(g: SignInGuard, email: str, host: str) -> AppError:
    with pytest.raises(AppError) as info:
        g.admit(email, host)
    assert (info.value.code, info.value.status) == ("TOO_MANY_REQUESTS", 429)
    return info.value


def fail(g: SignInGuard, email: str, host: str) -> None:
    g.failed(g.admit(email, host))


def test_the_sixth_attempt_on_an_account_waits_a_second_and_says_when() -> None:
    clock = FakeClock()
    g = guard(clock)
    for i in range(5):
        fail(g, "Ann@Example.test", f"192.0.2.{i}")  # a new address each time: the account's rule
    error = refused(g, "ann@example.test ", "198.51.100.1")  # the same account, however it is typed
    assert error.headers == {"Retry-After": "1"}
    assert re.fullmatch(r"too many failed sign-in attempts; try again in 1 second "
                        r"\(after \d\d:\d\d:\d\d UTC\)", error.message)
    clock.now = 1.0
    g.succeeded(g.admit("ann@example.test", "198.51.100.1"))
    for i in range(5):  # a success starts the account afresh
        fail(g, "ann@example.test", f"203.0.113.{i}")
    assert refused(g, "ann@example.test", "203.0.113.99").headers == {"Retry-After": "1"}


def test_ten_failures_lock_the_account_for_fifteen_minutes() -> None:
    clock = FakeClock()
    g = guard(clock)
    for at in (0, 0, 0, 0, 0, 1, 3, 7, 15, 31):
        clock.now = at
        fail(g, "bob@example.test", f"192.0.2.{at}")
    error = refused(g, "bob@example.test", "198.51.100.7")
    assert error.headers == {"Retry-After": "900"}
    assert "try again in 15 minutes" in error.message
    clock.now = 930.5
    assert refused(g, "bob@example.test", "198.51.100.7").headers == {"Retry-After": "1"}
    clock.now = 931.0
    g.admit("bob@example.test", "198.51.100.7")


def test_an_address_is_throttled_across_accounts_and_a_success_does_not_reset_it() -> None:
    clock = FakeClock()
    g = guard(clock, address=(3, 6))
    for i in range(2):
        fail(g, f"user{i}@example.test", "192.0.2.1")
    g.succeeded(g.admit("owner@example.test", "192.0.2.1"))  # forgiven, but the two failures stay
    fail(g, "user2@example.test", "192.0.2.1")
    assert refused(g, "fresh@example.test", "192.0.2.1").headers == {"Retry-After": "1"}
    g.admit("fresh@example.test", "192.0.2.2")  # another address is not affected


def test_parallel_attempts_are_counted_before_their_passwords_are_checked() -> None:
    g = guard(FakeClock())
    admitted = [g.admit("carol@example.test", f"192.0.2.{i}") for i in range(5)]
    refused(g, "carol@example.test", "192.0.2.9")  # five still in flight: the sixth waits
    for attempt in admitted:
        g.void(attempt)  # no verdict (the database failed): they are taken back
    g.admit("carol@example.test", "192.0.2.9")


def test_unknown_and_known_emails_are_throttled_alike() -> None:
    clock = FakeClock()
    g = guard(clock)
    for i in range(5):
        fail(g, "exists@example.test", f"192.0.2.{i}")
        fail(g, "nobody@example.test", f"198.51.100.{i}")
    assert refused(g, "exists@example.test", "203.0.113.1").headers == \
        refused(g, "nobody@example.test", "203.0.113.2").headers == {"Retry-After": "1"}


def test_the_logs_never_hold_more_than_their_bound() -> None:
    clock = FakeClock()
    g = guard(clock, size=100)
    for i in range(1000):
        fail(g, f"user{i}@example.test", f"10.0.{i // 256}.{i % 256}")
    assert (len(g.accounts), len(g.addresses)) == (100, 100)
    # The least recently failed went first; the newest are all still counted.
    assert g.accounts.retry_after(hashlib.sha256(b"user999@example.test").hexdigest(), 0.0) == 0.0
    for _ in range(4):
        fail(g, "user999@example.test", "10.9.9.9")
    refused(g, "user999@example.test", "10.9.9.8")


def test_the_guard_follows_the_settings() -> None:
    settings = Settings.from_env({}, signin_account_free_failures=2, signin_account_lock_failures=3,
                                 signin_address_free_failures=7, signin_address_lock_failures=9,
                                 signin_throttle_max_entries=5)
    g = SignInGuard.from_settings(settings)
    assert (g.accounts.rule.free_failures, g.accounts.rule.lock_failures) == (2, 3)
    assert (g.addresses.rule.free_failures, g.addresses.rule.lock_failures) == (7, 9)
    assert g.accounts.rule.lock_seconds == 900 and g.accounts.rule.base_delay_seconds == 1
    with pytest.raises(ValueError, match="LOCK_FAILURES must be above"):
        Settings.from_env({"ALUMIA_SIGNIN_ADDRESS_FREE_FAILURES": "50"})

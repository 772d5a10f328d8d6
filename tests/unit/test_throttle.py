"""The sign-in throttle's rule (domain/throttle.py): exact back-off and lock times on a fake clock."""

import pytest

from alumia.domain.throttle import (
    Failures,
    ThrottleRule,
    address_key,
    confirm_failure,
    delay_after,
    forgive_one,
    record_failure,
    retry_after,
)

RULE = ThrottleRule(free_failures=5, lock_failures=10, window_seconds=900, lock_seconds=900,
                    base_delay_seconds=1, max_delay_seconds=30)


def fail_at(times: list[float], rule: ThrottleRule = RULE) -> Failures:
    state = None
    for now in times:
        state = record_failure(rule, state, now)
    assert state is not None
    return state


def test_the_first_failures_are_free() -> None:
    state = None
    for count in range(1, 5):
        state = record_failure(RULE, state, 0.0)
        assert (state.count, retry_after(RULE, state, 0.0)) == (count, 0.0)


def test_after_the_free_failures_the_delay_doubles_from_the_last_failure() -> None:
    state = fail_at([0, 0, 0, 0, 0])
    assert retry_after(RULE, state, 0.0) == 1.0
    assert retry_after(RULE, state, 0.25) == 0.75
    assert retry_after(RULE, state, 1.0) == 0.0
    # Each failure made as soon as it is allowed: 1, 2, 4, 8, 16 seconds.
    state = record_failure(RULE, state, 1.0)
    assert retry_after(RULE, state, 1.0) == 2.0
    state = record_failure(RULE, state, 3.0)
    assert retry_after(RULE, state, 3.0) == 4.0
    state = record_failure(RULE, state, 7.0)
    assert retry_after(RULE, state, 7.0) == 8.0
    state = record_failure(RULE, state, 15.0)
    assert (state.count, retry_after(RULE, state, 15.0), state.locked_until) == (9, 16.0, None)


def test_the_tenth_failure_in_the_window_locks_for_fifteen_minutes_then_all_is_forgotten() -> None:
    state = fail_at([0, 0, 0, 0, 0, 1, 3, 7, 15, 31])
    assert (state.count, state.locked_until) == (10, 931.0)
    assert retry_after(RULE, state, 31.0) == 900.0
    assert retry_after(RULE, state, 930.5) == 0.5
    assert retry_after(RULE, state, 931.0) == 0.0
    after = record_failure(RULE, state, 931.0)
    assert (after.count, after.first_at, after.locked_until) == (1, 931.0, None)


def test_failures_older_than_the_window_are_forgotten() -> None:
    state = fail_at([0, 0, 0, 0, 0])
    assert retry_after(RULE, state, 899.0) == 0.0
    assert record_failure(RULE, state, 899.0).count == 6
    assert record_failure(RULE, state, 900.0) == Failures(count=1, first_at=900.0, last_at=900.0)


def test_the_delay_is_capped_and_never_overflows() -> None:
    rule = ThrottleRule(free_failures=0, lock_failures=10**9, window_seconds=900, lock_seconds=900,
                        base_delay_seconds=1, max_delay_seconds=30)
    assert [delay_after(rule, n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert delay_after(rule, 10**6) == 30


def test_a_confirmed_failure_restarts_the_delay_and_the_lock_from_when_it_was_known() -> None:
    state = fail_at([0, 0, 0, 0, 0])
    confirmed = confirm_failure(RULE, state, 0.2)
    assert confirmed is not None and retry_after(RULE, confirmed, 0.2) == 1.0
    locked = fail_at([0, 0, 0, 0, 0, 1, 3, 7, 15, 31])
    confirmed = confirm_failure(RULE, locked, 31.2)
    assert confirmed is not None and confirmed.locked_until == 931.2
    assert confirm_failure(RULE, None, 5.0) is None


def test_forgiving_an_attempt_takes_back_one_failure_and_the_lock_it_caused() -> None:
    locked = fail_at([0, 0, 0, 0, 0, 1, 3, 7, 15, 31])
    forgiven = forgive_one(RULE, locked, 31.0)
    assert forgiven is not None and (forgiven.count, forgiven.locked_until) == (9, None)
    assert retry_after(RULE, forgiven, 31.0) == 16.0
    assert forgive_one(RULE, fail_at([0]), 0.0) is None
    assert forgive_one(RULE, None, 0.0) is None


@pytest.mark.parametrize("fields", [{"free_failures": 10}, {"free_failures": -1}, {"lock_seconds": 0},
                                    {"base_delay_seconds": 0}, {"window_seconds": -1}])
def test_a_rule_that_could_not_work_is_refused(fields: dict) -> None:
    base = {"free_failures": 5, "lock_failures": 10, "window_seconds": 900, "lock_seconds": 900,
            "base_delay_seconds": 1, "max_delay_seconds": 30}
    with pytest.raises(ValueError):
        ThrottleRule(**{**base, **fields})


@pytest.mark.parametrize(("host", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8::1", "2001:db8::/64"),
    ("2001:db8:0:0:ffff:ffff:ffff:ffff", "2001:db8::/64"),
    ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("", ""),
    ("testclient", "testclient"),
])
def test_an_ipv6_client_counts_as_its_slash_64(host: str, key: str) -> None:
    assert address_key(host) == key

"""The sign-in throttle's rule: failures counted in a window, exponential back-off, then a lock.

Pure functions of (rule, state, now); `now` is any monotonic clock in seconds. Callers keep the state.
"""

import ipaddress
from dataclasses import dataclass, replace

# Past this many doublings the delay is at its cap anyway; the bound keeps 2**n a small number.
_MAX_DOUBLINGS = 32


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    """How many failures are free, how the delay grows after them, and when and how long to lock.

    Failures count from the first one for `window_seconds`; then they are forgotten. After
    `free_failures` of them each further attempt waits `base_delay_seconds * 2**(failures - free)`
    after the last failure (at most `max_delay_seconds`). The `lock_failures`-th failure inside the
    window locks for `lock_seconds`; when the lock ends the count starts again from zero.
    """

    free_failures: int
    lock_failures: int
    window_seconds: float
    lock_seconds: float
    base_delay_seconds: float
    max_delay_seconds: float

    def __post_init__(self) -> None:
        if not 0 <= self.free_failures < self.lock_failures:
            raise ValueError("free_failures must be at least 0 and below lock_failures")
        if min(self.window_seconds, self.lock_seconds, self.base_delay_seconds, self.max_delay_seconds) <= 0:
            raise ValueError("windows, locks and delays must be positive")


@dataclass(frozen=True, slots=True)
class Failures:
    """The failures of one account or address inside the current window."""

    count: int
    first_at: float
    last_at: float
    locked_until: float | None = None


def in_force(rule: ThrottleRule, state: Failures | None, now: float) -> Failures | None:
    """`state` if it still counts at `now`; None once its lock or its window has passed."""
    if state is None:
        return None
    if state.locked_until is not None:
        return state if now < state.locked_until else None
    return state if now < state.first_at + rule.window_seconds else None


def delay_after(rule: ThrottleRule, count: int) -> float:
    """The back-off after `count` failures (0 while they are free)."""
    if count < rule.free_failures:
        return 0.0
    doublings = min(count - rule.free_failures, _MAX_DOUBLINGS)
    factor: int = 2**doublings  # doublings >= 0 here, so an int (typeshed cannot tell from the sign)
    return min(rule.max_delay_seconds, rule.base_delay_seconds * factor)


def retry_after(rule: ThrottleRule, state: Failures | None, now: float) -> float:
    """Seconds until the next attempt may be made; 0 when it may be made now."""
    state = in_force(rule, state, now)
    if state is None:
        return 0.0
    if state.locked_until is not None:
        return state.locked_until - now
    return max(0.0, state.last_at + delay_after(rule, state.count) - now)


def record_failure(rule: ThrottleRule, state: Failures | None, now: float) -> Failures:
    """The state after one more failure at `now` (locked when it is the `lock_failures`-th)."""
    state = in_force(rule, state, now)
    count = 1 if state is None else state.count + 1
    first_at = now if state is None else state.first_at
    locked_until = now + rule.lock_seconds if count >= rule.lock_failures else None
    return Failures(count=count, first_at=first_at, last_at=now, locked_until=locked_until)


def confirm_failure(rule: ThrottleRule, state: Failures | None, now: float) -> Failures | None:
    """The state once a failure counted up front is known to be one at `now`: the back-off (or the
    lock) runs from here, not from when the attempt began."""
    state = in_force(rule, state, now)
    if state is None:
        return None
    locked_until = now + rule.lock_seconds if state.locked_until is not None else None
    return replace(state, last_at=now, locked_until=locked_until)


def forgive_one(rule: ThrottleRule, state: Failures | None, now: float) -> Failures | None:
    """The state with one counted failure taken back (an attempt counted up front that succeeded)."""
    state = in_force(rule, state, now)
    if state is None or state.count <= 1:
        return None
    count = state.count - 1
    locked_until = state.locked_until if count >= rule.lock_failures else None
    return replace(state, count=count, locked_until=locked_until)


def address_key(host: str) -> str:
    """What one client address counts as: an IPv4 address, or the /64 network of an IPv6 one.

    An IPv6 client is usually given a whole /64; keying on single addresses would let it take a fresh
    one for every attempt.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)

"""Who may try a password now: failures per account and per client address, kept in this process."""

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from alumia.clock import utcnow
from alumia.config import Settings
from alumia.domain import throttle
from alumia.domain.throttle import Failures, ThrottleRule, address_key
from alumia.errors import AppError, ErrorCode


class FailureLog:
    """Failures by key under one rule, at most `max_entries` of them (least recently failed go first).

    The bound keeps an attacker who cycles addresses or emails from growing memory without limit; the
    price is that such a flood can push out the oldest entries.
    """

    def __init__(self, rule: ThrottleRule, max_entries: int) -> None:
        self.rule = rule
        self._max = max_entries
        self._entries: OrderedDict[str, Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` may try again (0: now)."""
        return throttle.retry_after(self.rule, self._entries.get(key), now)

    def fail(self, key: str, now: float) -> None:
        """Count one failure for `key`."""
        self._put(key, throttle.record_failure(self.rule, self._entries.get(key), now))

    def confirm(self, key: str, now: float) -> None:
        """The failure counted for `key` up front is now known to be one."""
        self._put(key, throttle.confirm_failure(self.rule, self._entries.get(key), now))

    def forgive(self, key: str, now: float) -> None:
        """Take back one failure counted for `key`."""
        self._put(key, throttle.forgive_one(self.rule, self._entries.get(key), now))

    def clear(self, key: str) -> None:
        """Forget `key`'s failures."""
        self._entries.pop(key, None)

    def _put(self, key: str, state: Failures | None) -> None:
        if state is None:
            self._entries.pop(key, None)
            return
        self._entries[key] = state
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


def _in_words(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One admitted sign-in attempt: the keys it was counted under."""

    account: str
    address: str


class SignInGuard:
    """The sign-in throttle of one app: one log per account (email) and one per client address.

    Every admitted attempt is counted as a failure before its password is checked, so parallel attempts
    cannot all pass while the first ones are still being checked; a success then clears the account
    and takes the attempt back from the address (whose count a success does not reset, or one good
    account would let an address keep guessing at others).
    """

    def __init__(self, accounts: FailureLog, addresses: FailureLog,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.accounts = accounts
        self.addresses = addresses
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> "SignInGuard":
        """The guard with the rules and the size bound that the settings name."""
        def rule(free: int, lock: int) -> ThrottleRule:
            return ThrottleRule(free_failures=free, lock_failures=lock,
                                window_seconds=settings.signin_window_seconds,
                                lock_seconds=settings.signin_lock_seconds,
                                base_delay_seconds=settings.signin_backoff_base_seconds,
                                max_delay_seconds=settings.signin_backoff_max_seconds)

        size = settings.signin_throttle_max_entries
        return cls(FailureLog(rule(settings.signin_account_free_failures,
                                   settings.signin_account_lock_failures), size),
                   FailureLog(rule(settings.signin_address_free_failures,
                                   settings.signin_address_lock_failures), size))

    def admit(self, email: str, host: str) -> Attempt:
        """Count an attempt for `email` from `host`, or refuse it with TOO_MANY_REQUESTS and Retry-After.

        The same answer whether or not the email belongs to anyone.
        """
        now = self._clock()
        # By digest: a fixed size per entry whatever was typed, and no email addresses kept in memory.
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        address = address_key(host)
        wait = max(self.accounts.retry_after(account, now), self.addresses.retry_after(address, now))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            until = (utcnow() + timedelta(seconds=seconds)).strftime("%H:%M:%S")
            raise AppError(ErrorCode.TOO_MANY_REQUESTS,
                           f"too many failed sign-in attempts; try again in {_in_words(seconds)} "
                           f"(after {until} UTC)", headers={"Retry-After": str(seconds)})
        self.accounts.fail(account, now)
        self.addresses.fail(address, now)
        return Attempt(account=account, address=address)

    def failed(self, attempt: Attempt) -> None:
        """The password was wrong: the back-off runs from now."""
        now = self._clock()
        self.accounts.confirm(attempt.account, now)
        self.addresses.confirm(attempt.address, now)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the account starts afresh; the address gets its attempt back."""
        self.accounts.clear(attempt.account)
        self.addresses.forgive(attempt.address, self._clock())

    def void(self, attempt: Attempt) -> None:
        """The attempt ended without a verdict on the password (the database failed): take it back."""
        now = self._clock()
        self.accounts.forgive(attempt.account, now)
        self.addresses.forgive(attempt.address, now)

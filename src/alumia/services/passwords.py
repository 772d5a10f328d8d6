"""Password hashing and checking with argon2, on worker threads so the event loop never waits for it."""

import asyncio
import os
import secrets
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


async def hash_password(password: str) -> str:
    """An argon2id hash of `password`, computed on a worker thread.

    For the operator's one-off paths (the CLI, the demo's start); the service's own checks go through
    `Passwords`, which bounds how many run at once.
    """
    return await asyncio.to_thread(PasswordHasher().hash, password)


# How many nice levels below the event loop's thread the hashing threads run (Linux).
_HASHING_NICENESS = 10


def _yield_to_the_event_loop() -> None:
    """Lower this worker thread's CPU priority, so the gateway's calls go first when the cores are busy.

    Only on Linux, where a thread has a nice value of its own; elsewhere this would renice the process.
    """
    if sys.platform == "linux":
        thread = threading.get_native_id()
        # Relative (a new thread starts at its creator's, the loop's), and at most 19.
        niceness = min(19, os.getpriority(os.PRIO_PROCESS, thread) + _HASHING_NICENESS)
        os.setpriority(os.PRIO_PROCESS, thread, niceness)


class Passwords:
    """Checks passwords on a pool of `concurrency` threads of its own: one per app, made in its lifespan.

    The pool is the bound: a flood of sign-ins queues here instead of taking every core, and a check
    whose request was abandoned still holds its thread until argon2 returns (a semaphore released on
    cancellation would let more run at once). argon2-cffi releases the GIL while it hashes, and the
    pool's threads run at a lower CPU priority than the event loop.
    """

    def __init__(self, concurrency: int) -> None:
        self._hasher = PasswordHasher()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="alumia-argon2",
                                        initializer=_yield_to_the_event_loop)
        # A hash of a random password with the same parameters, made once per app (not at import),
        # started now so the first unknown email does not pay for it.
        self._dummy = asyncio.get_running_loop().run_in_executor(
            self._pool, self._hasher.hash, secrets.token_urlsafe(16))

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether `password` matches `stored_hash`; None (no such user) costs the same and is False."""
        target = stored_hash if stored_hash is not None else await self._dummy
        loop = asyncio.get_running_loop()
        matched = await loop.run_in_executor(self._pool, self._matches, target, password)
        return matched and stored_hash is not None

    def _matches(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        """Stop the pool; checks not yet started are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)

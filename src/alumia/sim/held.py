"""Calls a ``[[sim:hold]]`` keeps waiting until a test says ``POST /_sim/release``.

A held call has been received (it is in the call log) and checked (key, request, other faults), and
waits to be answered. `GET /_sim/held` counts the calls waiting now; `POST /_sim/release` lets every one
of them go on at once, and a call held after that waits for the next release. A held call that is never
released answers anyway after `HOLD_TIMEOUT_SECONDS`, with a warning in the log, so a broken test cannot
hang a simulator (or the gateway call behind it) forever.

Everything here runs on the simulator's one event loop: the control routes and the held calls are
served by the same app, so no lock is needed.
"""

import asyncio
import logging

HOLD_TIMEOUT_SECONDS = 60.0

log = logging.getLogger(__name__)


class HeldCalls:
    """The calls waiting for a release, one future each."""

    def __init__(self, timeout: float = HOLD_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self._waiting: set[asyncio.Future[None]] = set()

    @property
    def count(self) -> int:
        """How many calls are waiting now."""
        return len(self._waiting)

    async def hold(self, what: str) -> bool:
        """Wait until the next `release`; False when the safety timeout answered instead.

        `what` names the call in the timeout's warning.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.add(waiter)
        try:
            await asyncio.wait_for(waiter, self.timeout)
            return True
        except TimeoutError:
            log.warning("simulator: held call %s was never released; answering it after the %.1f s "
                        "safety timeout", what, self.timeout)
            return False
        finally:
            # Also on cancellation (the server shutting down), so `count` never counts a gone call.
            self._waiting.discard(waiter)

    def release(self) -> int:
        """Let every call waiting now go on; the number released."""
        waiting, self._waiting = self._waiting, set()
        # Taken out of the set before they run again, so `count` is 0 as soon as this returns. One
        # whose timeout is being handled right now is already done: it is not counted as released.
        released = [waiter for waiter in waiting if not waiter.done()]
        for waiter in released:
            waiter.set_result(None)
        return len(released)

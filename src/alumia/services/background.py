"""The app's background tasks, owned in one place: tracked until done, failures logged, drained at shutdown.

Work that must outlive the request that started it (metering a call whose client left, releasing an
orphaned hold, an auto top-up) or that runs for the app's life (the sweeper) is started here. The event
loop keeps only weak references to tasks, so an untracked one can vanish mid-flight; a failure nobody
awaits would otherwise be reported only as "exception was never retrieved", if at all.
"""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("alumia.background")

T = TypeVar("T")


class Background:
    """One per app (created with its services). `spawn` starts a task; `drain` ends them all."""

    def __init__(self) -> None:
        self._finite: set[asyncio.Task[Any]] = set()
        self._forever: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, T], what: str, *, forever: bool = False) -> "asyncio.Task[T]":
        """Run `work` in a task of its own; `what` names it in the log if it fails.

        A `forever` task (a loop for the app's life) is cancelled at shutdown; any other is awaited.
        """
        task = asyncio.create_task(work, name=what)
        tasks = self._forever if forever else self._finite
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_report_failure)
        return task

    def __len__(self) -> int:
        return len(self._finite) + len(self._forever)

    async def drain(self) -> None:
        """At shutdown: cancel the app-long loops, then wait for every other task to finish."""
        for task in list(self._forever):
            task.cancel()
        # Tasks may start others while they finish (a charge starting a top-up): wait until none is left.
        while pending := [*self._finite, *self._forever]:
            await asyncio.gather(*pending, return_exceptions=True)


def _report_failure(task: "asyncio.Task[Any]") -> None:
    # Nobody may await this task: say loudly what failed.
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("%s failed: %r", task.get_name(), error)

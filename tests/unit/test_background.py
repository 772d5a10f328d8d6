"""The app's background tasks (services/background.py) and the auto top-up service that uses them."""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from alumia.config import Settings
from alumia.services.auto_topup import AutoTopUp
from alumia.services.background import Background
from alumia.services.payments import StripeApi


async def test_a_failure_is_logged_with_what_failed(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()

    async def fails() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="alumia.background"):
        task = background.spawn(fails(), "metering call req_1 of org o1")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert "metering call req_1 of org o1 failed: RuntimeError('boom')" in caplog.text
    assert len(background) == 0


async def test_drain_cancels_the_app_long_loops_and_waits_for_everything_else() -> None:
    background, finished = Background(), []

    async def forever() -> None:
        await asyncio.Event().wait()

    async def work(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        finished.append(name)
        if name == "first":  # a task that starts another while the app stops: that one is waited for too
            background.spawn(work("started while draining", 0.05), "late")

    loop_task = background.spawn(forever(), "the sweeper", forever=True)
    background.spawn(work("first", 0.05), "a metering")
    await background.drain()
    assert loop_task.cancelled()
    assert finished == ["first", "started while draining"]
    assert len(background) == 0


class Spawned(Background):
    """A Background that records what it was asked to start, and starts nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def spawn(self, work: Coroutine[Any, Any, Any], what: str, *, forever: bool = False) -> Any:
        work.close()
        self.names.append(what)
        return asyncio.get_running_loop().create_future()  # pending: the top-up is still in flight


async def test_each_app_owns_its_top_ups_in_flight() -> None:
    settings = Settings.from_env({"ALUMIA_STRIPE_SECRET_KEY": "sk_test_" + "x" * 24,
                                  "ALUMIA_STRIPE_WEBHOOK_SECRET": "whsec_" + "y" * 24})
    stripe_api = StripeApi.open(settings)
    assert stripe_api is not None
    first, second = Spawned(), Spawned()
    app_a = AutoTopUp(db=None, settings=settings, stripe_api=stripe_api, background=first)  # type: ignore[arg-type]
    app_b = AutoTopUp(db=None, settings=settings, stripe_api=stripe_api, background=second)  # type: ignore[arg-type]
    app_a.after_charge("org-1", 50, threshold_cents=100)
    app_a.after_charge("org-1", 40, threshold_cents=100)  # one in flight here already: not another
    app_b.after_charge("org-1", 40, threshold_cents=100)  # another app in the same process: its own
    app_a.after_charge("org-2", 1_000_000 * 100, threshold_cents=100)  # above the threshold: nothing
    assert first.names == ["auto top-up for org org-1"]
    assert second.names == ["auto top-up for org org-1"]
    await stripe_api.close()

"""Closing holds outside a call's own metering: on failure before the answer, and by the sweeper."""

import asyncio
import logging

from alumia.clock import utcnow
from alumia.services.outbox import Outbox, recover, retry_failed
from alumia.storage import holds
from alumia.storage.call_writes import CloseHold
from alumia.storage.db import Database

log = logging.getLogger("alumia.holds")

# A hold outlives the longest upstream call by this much before the sweeper may expire it.
HOLD_GRACE_SECONDS = 60


async def release_hold(db: Database, hold_id: str) -> None:
    """Free a hold whose call ended before it could be metered (nothing was charged)."""
    await db.calls.close_hold(CloseHold(hold_id, "released", 0, utcnow()))


async def expire_stale(db: Database) -> int:
    """Expire open holds past their time (their process died mid-call); returns how many were freed.

    Each hold is closed by a conditional update, so several processes sweeping at once free it once.
    """
    now = utcnow()
    async with db.read() as conn:
        stale = await holds.expired_ids(conn, now)
    closed = await asyncio.gather(*(db.calls.close_hold(CloseHold(hold_id, "expired", None, now))
                                    for hold_id in stale))
    freed = sum(bool(amount) for amount in closed)
    if freed:
        log.warning("expired %s hold(s) left open by calls that never finished", freed)
    return freed


async def sweep(db: Database, outbox: Outbox | None = None) -> int:
    """One sweep: settle what dead processes and failed writes left, then expire what is still stale.

    The outbox goes first, so a call that was answered is charged (and its hold settled) before its
    hold could expire uncharged: dead processes' journals are replayed, then this process's own calls
    whose metering transaction failed are retried. Returns how many holds were expired.
    """
    if outbox is not None:
        try:
            await recover(db, outbox.directory, skip_owner=outbox.owner)
            await retry_failed(db, outbox)
            outbox.maintain()
        except Exception:  # a broken outbox must not keep stale holds from ever being freed
            log.exception("outbox recovery failed; expiring stale holds anyway")
    return await expire_stale(db)


async def sweep_forever(db: Database, interval_seconds: float, outbox: Outbox | None = None) -> None:
    """The background sweeper each process runs."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await sweep(db, outbox)
        except Exception:  # a failed sweep must not end the loop; the next one retries
            log.exception("hold sweep failed")

"""After the calls: holds closed outside a call's own metering, dead processes' journals replayed.

A call's hold is closed by its own metering; what is left — a call that failed before its answer, a
process killed mid-call, a metering write that failed — is closed here, the outbox's calls first.
"""

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from alumia.clock import utcnow
from alumia.services.metering import replay_call
from alumia.services.stored_responses import delete_expired
from alumia.storage import holds
from alumia.storage.call_writes import CloseHold
from alumia.storage.db import Database
from alumia.storage.outbox import Outbox, claim_dead

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


async def sweep(db: Database, outbox: Outbox | None = None,
                responses_retention_days: int | None = None) -> int:
    """One sweep: settle what dead processes and failed writes left, then expire what is still stale.

    The outbox goes first, so a call that was answered is charged (and its hold settled) before its
    hold could expire uncharged: dead processes' journals are replayed, then this process's own calls
    whose metering transaction failed are retried. With `responses_retention_days`, stored Responses
    past it are deleted too. Returns how many holds were expired.
    """
    if responses_retention_days is not None:
        try:
            await delete_expired(db, responses_retention_days)
        except Exception:  # money comes first: a failed deletion must not keep holds from being swept
            log.exception("deleting expired stored responses failed")
    if outbox is not None:
        try:
            await recover(db, outbox.directory, skip_owner=outbox.owner)
            await retry_failed(db, outbox)
            outbox.maintain()
        except Exception:  # a broken outbox must not keep stale holds from ever being freed
            log.exception("outbox recovery failed; expiring stale holds anyway")
    return await expire_stale(db)


async def sweep_forever(db: Database, interval_seconds: float, outbox: Outbox | None = None,
                        responses_retention_days: int | None = None) -> None:
    """The background sweeper each process runs."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await sweep(db, outbox, responses_retention_days)
        except Exception:  # a failed sweep must not end the loop; the next one retries
            log.exception("hold sweep failed")


@dataclass
class Recovery:
    """What one `recover` pass did."""

    owners: int = 0       # dead owners whose journals were read
    replayed: int = 0     # calls written now (they had not committed)
    skipped: int = 0      # calls that had committed before their process died
    failed: int = 0       # calls that could not be written; their owner's files stay for the next pass


async def recover(db: Database, directory: Path, *, skip_owner: str | None = None) -> Recovery:
    """Replay the journals of dead processes, then delete them.

    A call that already has a usage record is skipped; any other is written by the normal metering
    path (usage record, hold settled if it is still open, ledger charge; see `metering.replay_call`).
    Two processes recovering at once cannot both replay one owner (the flock decides), and the usage
    record's unique id backstops even that. An owner whose calls could not all be written keeps its
    files, to be replayed again by the next pass.
    """
    result = Recovery()
    for journal in claim_dead(directory, skip_owner=skip_owner):
        result.owners += 1
        failed_before = result.failed
        for call in journal.calls():
            try:
                wrote = await replay_call(db, call)
            except Exception:
                log.exception("could not replay call %s of org %s from a dead process's outbox",
                              call.request_id, call.org_id)
                result.failed += 1
                continue
            if wrote:
                result.replayed += 1
            else:
                result.skipped += 1
        if result.failed == failed_before:
            journal.remove()
    if result.replayed or result.failed:
        log.warning("outbox recovery: %s call(s) of %s dead process(es) metered now, %s had committed, "
                    "%s failed", result.replayed, result.owners, result.skipped, result.failed)
    return result


async def retry_failed(db: Database, outbox: Outbox) -> int:
    """Write this process's own calls whose metering transaction failed (a database outage, say).

    Only calls marked failed are retried, never one whose transaction is still running. Returns how
    many were written; a call that fails again stays for the next sweep.
    """
    written = 0
    for entry in outbox.failed_entries():
        try:
            wrote = await replay_call(db, entry.call)
        except Exception:
            log.exception("metering call %s of org %s failed again; retrying at the next sweep",
                          entry.call.request_id, entry.call.org_id)
            continue
        written += wrote
        outbox.committed(entry)
    if written:
        log.warning("metered %s call(s) whose first metering attempt had failed", written)
    return written

"""Writing what a call used and what it cost: usage record, hold closed and ledger charge, together.

With an outbox (storage/outbox.py) each call is journaled before its transaction, so a process killed
between the provider's answer and the commit loses nothing: another process, or the next start,
replays the journal through `replay_call`.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from alumia.clock import as_utc
from alumia.domain.call_record import CallRecord
from alumia.domain.routing import Route
from alumia.services.background import Background
from alumia.storage import usage
from alumia.storage.call_writes import DuplicateWrite, Settle, UsageRow
from alumia.storage.db import Database
from alumia.storage.outbox import Outbox

log = logging.getLogger("alumia.metering")

# lastUsedAt is for people; refreshing it at most once a minute keeps a write off most calls.
LAST_USED_RESOLUTION = timedelta(seconds=60)


# Called with (org id, balance after, the org's auto top-up threshold or None) once a charge has committed
# (services/auto_topup.py decides whether a top-up is due, and starts it in the background).
LowBalanceHook = Callable[[str, int, int | None], None]


def _stale(last_used: datetime | None, now: datetime) -> bool:
    return last_used is None or now - as_utc(last_used) >= LAST_USED_RESOLUTION


class Metering:
    """Meters the app's calls: each in a background task of its own (services/background.py), which a
    cancelled request cannot interrupt and whose failure is logged even when nobody awaits it."""

    def __init__(self, db: Database, outbox: Outbox | None, background: Background,
                 on_low_balance: LowBalanceHook | None) -> None:
        self.db, self.outbox, self.background, self.on_low_balance = db, outbox, background, on_low_balance
        self.last_used = LastUsedRefresh()

    def start(self, call: CallRecord) -> "asyncio.Task[None]":
        """Begin metering `call`; the task ends once its write has committed (or been journaled as failed)."""
        return self.background.spawn(
            record_call(self.db, call, self.on_low_balance, outbox=self.outbox, last_used=self.last_used),
            f"metering call {call.request_id} of org {call.org_id}")


class LastUsedRefresh:
    """Which keys' lastUsedAt a call should refresh: each at most once a minute per process.

    The caller's context may come from a cache (services/context_cache.py), whose lastUsedAt values stop
    moving; what this process last wrote is remembered here instead.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._written: dict[str, datetime] = {}
        self._limit = limit

    def keys_to_touch(self, call: CallRecord) -> tuple[tuple[str, str], ...]:
        """The (table, id) pairs to refresh with this call, remembered as refreshed."""
        due = []
        for table, key_id, stored in (("byok_keys", call.byok_key_id, call.byok_last_used_at),
                                      ("api_keys", call.api_key_id, call.api_key_last_used_at)):
            if key_id is None:
                continue
            last = self._written.get(key_id, stored)
            if _stale(last, call.created_at):
                if len(self._written) >= self._limit:
                    self._written.clear()  # bounded: forgetting only costs an early refresh
                self._written[key_id] = call.created_at
                due.append((table, key_id))
        return tuple(due)


async def record_call(db: Database, call: CallRecord, on_low_balance: LowBalanceHook | None = None, *,
                      outbox: Outbox | None = None, last_used: LastUsedRefresh | None = None) -> None:
    """Commit the usage record and, when the balance pays, its ledger charge, together.

    With an `outbox`, the call is journaled first and marked done after the commit; if the write
    raises, it stays journaled as failed, this returns normally, and the sweeper retries it
    (`outbox.retry_failed`); if the process dies, another one replays it (`outbox.recover`). Without a
    journal line the write's error is raised. The write is one operation of a group commit
    (storage/call_writes.py): this returns once the transaction carrying it has committed.

    After the commit, `on_low_balance` hears of every charge (auto_topup.after_charge: with auto top-up
    off, or the balance above the threshold, this costs a comparison, no query).
    """
    entry = outbox.append(call) if outbox is not None else None
    try:
        balance_after = await _write(db, call, last_used if last_used is not None else LastUsedRefresh())
    except Exception as exc:
        if outbox is None or entry is None:
            raise
        # Journaled: the sweeper writes it once the database is back, so the caller still gets its
        # answer (the commit may or may not have happened; the retry checks first).
        outbox.failed(entry)
        log.error("metering call %s of org %s failed (%s); it stays journaled and is written at the "
                  "next sweep", call.request_id, call.org_id, type(exc).__name__)
        return
    except BaseException:  # cancelled: as above, but the cancellation goes on
        if outbox is not None and entry is not None:
            outbox.failed(entry)
        raise
    if outbox is not None and entry is not None:
        outbox.committed(entry)
    if on_low_balance is not None and balance_after is not None:
        on_low_balance(call.org_id, balance_after, call.auto_topup_threshold_cents)


async def replay_call(db: Database, call: CallRecord) -> bool:
    """Write a journaled call unless it is already recorded; True when this call wrote it.

    Idempotent, also when several processes replay the same call at once: the usage record's id (the
    request id) and the ledger entry's idempotency key are unique, so a second writer's transaction
    fails and rolls back whole, and is then seen to be a duplicate. Replays do not start an auto top-up
    (the next charged call does).
    """
    if await _recorded(db, call):
        return False
    try:
        # A fresh refresh rule: the keys' stored lastUsedAt values decide, nothing this process wrote.
        await _write(db, call, LastUsedRefresh())
    except DuplicateWrite:
        if await _recorded(db, call):
            return False
        raise
    return True


async def _recorded(db: Database, call: CallRecord) -> bool:
    async with db.lookup() as conn:
        return await usage.record_by_id(conn, call.org_id, call.request_id) is not None


async def _write(db: Database, call: CallRecord, last_used: LastUsedRefresh) -> int | None:
    """The call's one write (storage/call_writes.py `Settle`); the balance after its charge, or None.

    A hold that is no longer open was expired by the sweeper (its call outlived the hold, or its
    process died and nobody replayed the call before the expiry). The hold then stays `expired`, closed
    once, and the usage and its charge are still recorded: the client had its answer. The balance may
    go below what was available, because the expired hold's amount had been freed for other calls.
    """
    u = call.usage
    settled = await db.calls.settle(Settle(
        row=usage_row(call), hold_id=call.hold_id, charge=call.charged_microcents,
        description=f"{call.model} ({u.prompt_tokens} in, {u.output_tokens} out)",
        idempotency_key=f"usage:{call.request_id}", touch_keys=last_used.keys_to_touch(call)))
    if not settled.freed:
        log.warning("hold %s had already expired when call %s of org %s was metered; recording "
                    "its usage and charge of %s microcents anyway", call.hold_id, call.request_id,
                    call.org_id, call.charged_microcents)
    return settled.balance_after


def usage_row(call: CallRecord) -> UsageRow:
    """The usage_records row of a call."""
    u = call.usage
    return UsageRow(
        id=call.request_id, org_id=call.org_id, api_key_id=call.api_key_id, agent_id=call.agent_id,
        model=call.model, provider=call.provider, route=call.route.value, byok=call.route is Route.BYOK,
        byok_key_id=call.byok_key_id, stream=call.stream, input_tokens=u.input_tokens,
        output_tokens=u.output_tokens, cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens, reasoning_tokens=u.reasoning_tokens,
        usage_estimated=call.usage_estimated, cost_microcents=call.cost_microcents,
        fee_microcents=call.fee_microcents, charged_microcents=call.charged_microcents, status=call.status,
        http_status=call.http_status, error_code=call.error_code, latency_ms=call.latency_ms,
        api=call.api.value,
        created_at=call.created_at)

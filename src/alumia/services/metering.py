"""Writing what a call used and what it cost: usage record, hold closed and ledger charge, together.

With an outbox (services/outbox.py) each call is journaled before its transaction, so a process killed
between the provider's answer and the commit loses nothing: another process, or the next start,
replays the journal through `replay_call`.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from alumia.clock import as_utc
from alumia.domain.money import cents_to_microcents
from alumia.domain.routing import Route
from alumia.domain.usage import TokenUsage
from alumia.storage import usage
from alumia.storage.call_writes import DuplicateWrite, Settle, UsageRow
from alumia.storage.db import Database

if TYPE_CHECKING:  # outbox.py imports this module (CallRecord, replay_call)
    from alumia.services.outbox import Outbox

log = logging.getLogger("alumia.metering")

# lastUsedAt is for people; refreshing it at most once a minute keeps a write off most calls.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """Everything metering writes about one call."""

    request_id: str
    org_id: str
    api_key_id: str | None
    api_key_last_used_at: datetime | None
    agent_id: str | None
    hold_id: str | None
    model: str
    provider: str
    route: Route
    byok_key_id: str | None
    byok_last_used_at: datetime | None
    stream: bool
    usage: TokenUsage
    usage_estimated: bool
    cost_microcents: int
    fee_microcents: int
    charged_microcents: int
    status: str
    http_status: int
    error_code: str | None
    latency_ms: int
    created_at: datetime
    # The org's auto top-up threshold when auto top-up is on (read with the call's context), else None.
    auto_topup_threshold_cents: int | None = None


# Called with (org id, balance after) once a charge that left the balance below the auto top-up
# threshold has committed (services/auto_topup.py starts the top-up in the background).
LowBalanceHook = Callable[[str, int], None]


def _stale(last_used: datetime | None, now: datetime) -> bool:
    return last_used is None or now - as_utc(last_used) >= LAST_USED_RESOLUTION


class LastUsedRefresh:
    """Which keys' lastUsedAt a call should refresh: each at most once a minute per process.

    The caller's context may come from a cache (services/caller_cache.py), whose lastUsedAt values stop
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
                      outbox: "Outbox | None" = None, last_used: LastUsedRefresh | None = None) -> None:
    """Commit the usage record and, when the balance pays, its ledger charge, together.

    With an `outbox`, the call is journaled first and marked done after the commit; if the write
    raises, it stays journaled as failed, this returns normally, and the sweeper retries it
    (`outbox.retry_failed`); if the process dies, another one replays it (`outbox.recover`). Without a
    journal line the write's error is raised. The write is one operation of a group commit
    (storage/call_writes.py): this returns once the transaction carrying it has committed.

    After the commit, `on_low_balance` hears of a charge that left the balance below the auto top-up
    threshold; with auto top-up off this costs a comparison, no query.
    """
    entry = outbox.append(call) if outbox is not None else None
    try:
        balance_after = await _write(db, call, last_used)
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
    threshold = call.auto_topup_threshold_cents
    if (on_low_balance is not None and balance_after is not None and threshold is not None
            and balance_after < cents_to_microcents(threshold)):
        on_low_balance(call.org_id, balance_after)


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
        await _write(db, call, None)
    except DuplicateWrite:
        if await _recorded(db, call):
            return False
        raise
    return True


async def _recorded(db: Database, call: CallRecord) -> bool:
    async with db.lookup() as conn:
        return await usage.record_by_id(conn, call.org_id, call.request_id) is not None


async def _write(db: Database, call: CallRecord, last_used: LastUsedRefresh | None) -> int | None:
    """The call's one write (storage/call_writes.py `Settle`); the balance after its charge, or None.

    A hold that is no longer open was expired by the sweeper (its call outlived the hold, or its
    process died and nobody replayed the call before the expiry). The hold then stays `expired`, closed
    once, and the usage and its charge are still recorded: the client had its answer. The balance may
    go below what was available, because the expired hold's amount had been freed for other calls.
    """
    u = call.usage
    if last_used is not None:
        touch = last_used.keys_to_touch(call)
    else:
        touch = tuple((table, key_id) for table, key_id, stored in (
            ("byok_keys", call.byok_key_id, call.byok_last_used_at),
            ("api_keys", call.api_key_id, call.api_key_last_used_at))
            if key_id is not None and _stale(stored, call.created_at))
    settled = await db.calls.settle(Settle(
        row=usage_row(call), hold_id=call.hold_id, charge=call.charged_microcents,
        description=f"{call.model} ({u.prompt_tokens} in, {u.output_tokens} out)",
        idempotency_key=f"usage:{call.request_id}", touch_keys=touch))
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
        created_at=call.created_at)

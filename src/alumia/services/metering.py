"""Writing what a call used and what it cost: usage record and ledger charge in one transaction.

With an outbox (services/outbox.py) each call is journaled before its transaction, so a process killed
between the provider's answer and the commit loses nothing: another process, or the next start,
replays the journal through `replay_call`.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.clock import as_utc
from alumia.domain.money import cents_to_microcents
from alumia.domain.routing import Route
from alumia.domain.usage import TokenUsage
from alumia.storage import accounts, byok, holds, ledger, settlement, usage
from alumia.storage.db import Database
from alumia.storage.ledger import NewEntry

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


async def record_call(db: Database, call: CallRecord, on_low_balance: LowBalanceHook | None = None, *,
                      outbox: "Outbox | None" = None) -> None:
    """Commit the usage record and, when the balance pays, its ledger charge, together.

    With an `outbox`, the call is journaled first and marked done after the commit; if the transaction
    raises, it stays journaled as failed, this returns normally, and the sweeper retries it
    (`outbox.retry_failed`); if the process dies, another one replays it (`outbox.recover`). Without a
    journal line the transaction's error is raised.

    After the commit, `on_low_balance` hears of a charge that left the balance below the auto top-up
    threshold; with auto top-up off this costs a comparison, no query.
    """
    entry = outbox.append(call) if outbox is not None else None
    try:
        balance_after = await _write(db, call)
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
        await _write(db, call)
    except IntegrityError:
        if await _recorded(db, call):
            return False
        raise
    return True


async def _recorded(db: Database, call: CallRecord) -> bool:
    async with db.lookup() as conn:
        return await usage.record_by_id(conn, call.org_id, call.request_id) is not None


async def _write(db: Database, call: CallRecord) -> int | None:
    """The one metering transaction; returns the balance after the charge (None when nothing was charged).

    A hold that is no longer open was expired by the sweeper (its call outlived the hold, or its
    process died and nobody replayed the call before the expiry). The hold then stays `expired`, closed
    once, and the usage and its charge are still recorded: the client had its answer. The balance may
    go below what was available, because the expired hold's amount had been freed for other calls.
    """
    u = call.usage
    row = _usage_row(call)
    description = f"{call.model} ({u.prompt_tokens} in, {u.output_tokens} out)"
    idempotency_key = f"usage:{call.request_id}"
    closing = "settled" if call.charged_microcents else "released"
    balance_after: int | None = None
    freed = True
    if not db.is_sqlite and (call.hold_id or not call.charged_microcents):
        # PostgreSQL: the record and its money are one statement, atomic on its own, in autocommit
        # (storage/settlement.py); lastUsedAt is for people and needs no transaction with it.
        async with db.lookup() as conn:
            if call.hold_id:
                balance, freed = await settlement.settle(
                    conn, row, hold_id=call.hold_id, hold_status=closing, charge=call.charged_microcents,
                    description=description, idempotency_key=idempotency_key, now=call.created_at)
                balance_after = balance if call.charged_microcents else None
            else:
                await usage.insert_record(conn, row)
            await _touch(conn, call)
    else:
        async with db.write() as conn:
            await usage.insert_record(conn, row)
            if call.hold_id:
                freed = bool(await holds.close(conn, call.hold_id, closing, call.charged_microcents,
                                               call.created_at))
            if call.charged_microcents:
                balance_after = await ledger.append(conn, NewEntry(
                    org_id=call.org_id, type="usage_charge", amount_microcents=-call.charged_microcents,
                    description=description, idempotency_key=idempotency_key, request_id=call.request_id),
                    call.created_at)
            await _touch(conn, call)
    if not freed:
        log.warning("hold %s had already expired when call %s of org %s was metered; recording "
                    "its usage and charge of %s microcents anyway", call.hold_id, call.request_id,
                    call.org_id, call.charged_microcents)
    return balance_after


def _usage_row(call: CallRecord) -> dict:
    """The usage_records row of a call."""
    u = call.usage
    return {
        "id": call.request_id, "org_id": call.org_id, "api_key_id": call.api_key_id,
        "agent_id": call.agent_id,
        "model": call.model, "provider": call.provider, "route": call.route.value,
        "byok": call.route is Route.BYOK, "byok_key_id": call.byok_key_id, "stream": call.stream,
        "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens,
        "reasoning_tokens": u.reasoning_tokens, "usage_estimated": call.usage_estimated,
        "cost_microcents": call.cost_microcents,
        "fee_microcents": call.fee_microcents, "charged_microcents": call.charged_microcents,
        "status": call.status, "http_status": call.http_status, "error_code": call.error_code,
        "latency_ms": call.latency_ms, "created_at": call.created_at,
    }


async def _touch(conn: AsyncConnection, call: CallRecord) -> None:
    """Refresh the keys' lastUsedAt, at most once a minute each."""
    if call.byok_key_id and _stale(call.byok_last_used_at, call.created_at):
        await byok.touch_last_used(conn, call.byok_key_id, call.created_at)
    if call.api_key_id and _stale(call.api_key_last_used_at, call.created_at):
        await accounts.touch_api_key(conn, call.api_key_id, call.created_at)

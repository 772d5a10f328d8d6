"""What a gateway run left in its database, checked against the calls the benchmark saw succeed.

For every org: as many usage records as successful calls made with its key (none lost, none extra),
none of them an error or an estimate, its balance equal to the sum of its ledger entries, and no hold
left open (nor any amount still held). Reads the tables of src/alumia/storage/tables.py with plain SQL
(sqlite3 or asyncpg), so it depends on the schema only, not on the gateway's code.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from urllib.parse import unquote

ORG_STATE_SQL = """
SELECT o.slug, o.balance_microcents, o.held_microcents,
       (SELECT COALESCE(SUM(l.amount_microcents), 0) FROM ledger_entries l WHERE l.org_id = o.id),
       (SELECT COUNT(*) FROM usage_records u WHERE u.org_id = o.id),
       (SELECT COUNT(*) FROM usage_records u WHERE u.org_id = o.id
           AND (u.status <> 'ok' OR u.http_status <> 200 OR u.usage_estimated)),
       (SELECT COUNT(*) FROM holds h WHERE h.org_id = o.id AND h.status = 'open')
FROM orgs o ORDER BY o.slug
"""
SETTLE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class OrgState:
    """One org's rows, summed."""

    slug: str
    balance: int
    held: int
    ledger_sum: int
    usage_records: int
    error_records: int
    open_holds: int


@dataclass(frozen=True)
class Check:
    """One line of the database checks: what was checked and whether it held."""

    ok: bool
    text: str


def _sqlite_states(url: str) -> list[OrgState]:
    path = unquote(url.split(":///", 1)[1])
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [OrgState(*row) for row in conn.execute(ORG_STATE_SQL)]
    finally:
        conn.close()


async def _postgres_states(url: str) -> list[OrgState]:
    import asyncpg  # only needed on PostgreSQL

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=5)
    try:
        return [OrgState(*row) for row in await conn.fetch(ORG_STATE_SQL)]
    finally:
        await conn.close()


async def org_states(url: str) -> list[OrgState]:
    """Every org's state in the database at `url` (an ALUMIA_DATABASE_URL)."""
    if url.startswith("sqlite"):
        return await asyncio.to_thread(_sqlite_states, url)
    return await _postgres_states(url)


def _settled(states: list[OrgState], expected: dict[str, int]) -> bool:
    by_slug = {s.slug: s for s in states}
    return (all(s.open_holds == 0 for s in states)
            and all(slug in by_slug and by_slug[slug].usage_records >= n for slug, n in expected.items()))


async def wait_settled(url: str, expected: dict[str, int], limit_s: float = SETTLE_TIMEOUT_S) -> float:
    """Wait (bounded) until every expected usage record is written and no hold is open; the seconds waited.

    Metering may finish after the answer was sent, so the records of the last calls can land a little
    later; the checks themselves run afterwards, once the gateway has stopped.
    """
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if _settled(await org_states(url), expected):
            break
        await asyncio.sleep(0.25)
    return time.monotonic() - started


def check_states(states: list[OrgState], expected: dict[str, int]) -> list[Check]:
    """The checks, one per org: `expected` maps an org's slug to the successful calls made with its key."""
    checks = []
    seen = {s.slug for s in states}
    checks += [Check(False, f"org {slug}: missing from the database")
               for slug in expected if slug not in seen]
    for s in states:
        want = expected.get(s.slug, 0)
        problems = []
        if s.usage_records != want:
            problems.append(f"{s.usage_records} usage records for {want} successful calls")
        if s.error_records:
            problems.append(f"{s.error_records} error/estimated usage records")
        if s.balance != s.ledger_sum:
            problems.append(f"balance {s.balance} != ledger sum {s.ledger_sum} microcents")
        if s.open_holds or s.held:
            problems.append(f"{s.open_holds} open holds, {s.held} microcents held")
        summary = (f"org {s.slug}: {s.usage_records} usage records = {want} successful calls, "
                   f"0 errors, balance = ledger sum ({s.balance} microcents), 0 open holds")
        failure = f"org {s.slug}: " + "; ".join(problems)
        checks.append(Check(not problems, failure if problems else summary))
    return checks

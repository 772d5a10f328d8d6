"""The read barrier (storage/generation.py) and the context cache's rules (services/context_cache.py),
driven by a fake read whose results the test releases one by one: pure coordination, no database."""

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from alumia.services.context_cache import ContextCache, Load
from alumia.storage.gateway import CallContext
from alumia.storage.generation import GenerationUnavailable, GenerationWatch, SqliteGeneration


class FakeReads:
    """A read function whose every call waits until the test settles it."""

    def __init__(self) -> None:
        self.started: list[asyncio.Future[int]] = []

    async def read(self) -> int:
        future = asyncio.get_running_loop().create_future()
        self.started.append(future)
        return await future

    async def close(self) -> None:
        """Nothing to close."""


async def settle() -> None:
    """Let every ready task and callback run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_caller_gets_the_read_it_started() -> None:
    reads = FakeReads()
    watch = GenerationWatch(reads.read)
    caller = asyncio.create_task(watch.current())
    await settle()
    assert len(reads.started) == 1
    reads.started[0].set_result(7)
    assert await caller == 7


async def test_a_read_that_started_before_the_call_is_never_its_answer() -> None:
    reads = FakeReads()
    watch = GenerationWatch(reads.read)
    early = asyncio.create_task(watch.current())
    await settle()
    [first] = reads.started
    late = asyncio.create_task(watch.current())  # arrives while `first` is in flight
    await settle()
    assert len(reads.started) == 1  # it waits: no second statement runs beside the first
    first.set_result(1)
    await settle()
    assert early.done() and early.result() == 1
    assert not late.done()  # `first` may have started before `late` was called
    [_, second] = reads.started  # the next read starts as soon as the first ends
    second.set_result(2)
    assert await late == 2


async def test_callers_that_wait_together_share_one_read() -> None:
    reads = FakeReads()
    watch = GenerationWatch(reads.read)
    first = asyncio.create_task(watch.current())
    await settle()
    waiting = [asyncio.create_task(watch.current()) for _ in range(50)]
    await settle()
    reads.started[0].set_result(1)
    await settle()
    assert len(reads.started) == 2 and watch.reads == 2  # 51 callers, two statements
    later = asyncio.create_task(watch.current())  # arrives while the second read is in flight
    await settle()
    reads.started[1].set_result(2)
    await settle()
    assert await first == 1
    assert [await task for task in waiting] == [2] * 50
    assert len(reads.started) == 3 and not later.done()
    reads.started[2].set_result(3)
    assert await later == 3


async def test_a_failed_read_fails_its_batch_and_the_next_call_reads_again() -> None:
    reads = FakeReads()
    watch = GenerationWatch(reads.read)
    first = asyncio.create_task(watch.current())
    await settle()
    waiting = [asyncio.create_task(watch.current()) for _ in range(3)]
    await settle()
    reads.started[0].set_exception(GenerationUnavailable("down"))
    await settle()
    reads.started[1].set_exception(GenerationUnavailable("still down"))
    for task in (first, *waiting):
        with pytest.raises(GenerationUnavailable):
            await task
    again = asyncio.create_task(watch.current())  # nothing is wedged: a new read starts
    await settle()
    reads.started[2].set_result(9)
    assert await again == 9


async def test_a_caller_that_goes_away_does_not_cancel_the_read_others_share() -> None:
    reads = FakeReads()
    watch = GenerationWatch(reads.read)
    leaving = asyncio.create_task(watch.current())
    staying = asyncio.create_task(watch.current())
    await settle()
    leaving.cancel()
    await settle()
    reads.started[0].set_result(4)
    await settle()
    reads.started[1].set_result(5)
    assert await staying == 5
    assert leaving.cancelled()


def context(agent_id: str | None = None) -> CallContext:
    return CallContext(api_key_id="k", api_key_last_used_at=None, scopes="gateway", org_id="o", org_slug="o",
                       balance_microcents=0, held_microcents=0, cumulative_deposits_cents=0,
                       agent_id=agent_id, agent_active=True if agent_id else None, auto_topup_enabled=False,
                       auto_topup_threshold_cents=500, active_keys=())


class Counter:
    """A generation the test sets, read at once, and a context load that counts its calls."""

    def __init__(self) -> None:
        self.value = 0
        self.loads = 0

    async def read(self) -> int:
        return self.value

    async def close(self) -> None:
        """Nothing to close."""

    def load(self, ctx: CallContext | None) -> Load:
        async def run() -> CallContext | None:
            self.loads += 1
            await asyncio.sleep(0)
            return ctx
        return run


async def test_a_context_is_served_while_the_generation_stands_and_read_again_when_it_moves() -> None:
    counter = Counter()
    cache = ContextCache(counter, max_entries=10)
    ctx = context()
    for _ in range(5):
        assert await cache.context(("key", "h", None), counter.load(ctx)) is ctx
    assert counter.loads == 1 and cache.hits == 4
    counter.value = 1
    fresh = context()
    assert await cache.context(("key", "h", None), counter.load(fresh)) is fresh
    assert counter.loads == 2


async def test_refusals_are_never_remembered_and_the_cache_is_bounded() -> None:
    counter = Counter()
    cache = ContextCache(counter, max_entries=3)
    for _ in range(3):
        assert await cache.context(("key", "unknown", None), counter.load(None)) is None
    no_agent = context(agent_id=None)  # the header named no agent: the call gets a 404
    assert await cache.context(("key", "h", "no-such-agent"), counter.load(no_agent)) is no_agent
    assert len(cache) == 0 and counter.loads == 4
    for n in range(10):
        await cache.context(("key", f"h{n}", None), counter.load(context()))
    assert len(cache) == 3


async def test_concurrent_misses_of_one_caller_share_one_load() -> None:
    counter = Counter()
    cache = ContextCache(counter, max_entries=10)
    ctx = context()
    got = await asyncio.gather(*(cache.context(("key", "h", None), counter.load(ctx)) for _ in range(20)))
    assert got == [ctx] * 20 and counter.loads == 1


async def test_a_generation_that_goes_back_empties_the_cache() -> None:
    counter = Counter()
    counter.value = 5
    cache = ContextCache(counter, max_entries=10)
    await cache.context(("key", "h", None), counter.load(context()))
    counter.value = 0  # the database was replaced
    await cache.context(("key", "other", None), counter.load(context()))
    counter.value = 5
    await cache.context(("key", "h", None), counter.load(context()))
    assert counter.loads == 3


def _counter_file(tmp_path: Path, value: int) -> str:
    path = str(tmp_path / "generation.db")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE cache_generation (id INTEGER PRIMARY KEY, value BIGINT NOT NULL)")
        conn.execute("INSERT INTO cache_generation VALUES (1, ?)", (value,))
    return path


async def test_the_sqlite_counter_is_read_fresh_on_every_read(tmp_path: Path) -> None:
    path = _counter_file(tmp_path, 7)
    reader = SqliteGeneration(path)
    try:
        assert await reader.read() == 7
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as writer:
            writer.execute("UPDATE cache_generation SET value = 8")
        assert await reader.read() == 8
    finally:
        await reader.close()


async def test_a_sqlite_read_that_would_wait_waits_on_its_thread_not_on_the_loop(tmp_path: Path) -> None:
    path = _counter_file(tmp_path, 3)
    reader = SqliteGeneration(path)
    # A connection in exclusive locking mode keeps every reader out while it holds its write lock.
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE cache_generation SET value = 4")
    try:
        read = asyncio.ensure_future(reader.read())
        ticks = 0
        while not read.done() and ticks < 20:  # the loop keeps running while the read waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not read.done()
        holder.execute("COMMIT")
        holder.close()  # and with it the exclusive lock
        assert await asyncio.wait_for(read, 5) == 4
    finally:
        holder.close()
        await reader.close()

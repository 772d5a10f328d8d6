"""The cache generation (migration 0009), read through a barrier that concurrent calls share.

`GenerationWatch.current()` answers with a value read by a statement that started after it was called:
a change whose HTTP response returned before the call bumped the counter in its own transaction, so the
caller sees that bump (or a later one). Callers that wait at the same time share one statement: while a
read is in flight, new callers cannot use it (it may have started before them) and join the next one,
which starts as soon as the current one ends. Under load that is one statement per batch of calls.

The statement runs on the driver directly, prepared, on a connection of its own (storage/drivers.py):
a SQLite connection used from one dedicated thread, or one asyncpg connection. A connection that fails
is dropped and opened again by the next read, so an outage never wedges the process.
"""

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from alumia.storage.drivers import asyncpg_dsn, sqlite_path

log = logging.getLogger("alumia.generation")

READ_GENERATION = "SELECT value FROM cache_generation WHERE id = 1"
# How long one read, or opening its connection, may take before the call is refused (503): a database
# that does not answer must not hold every call of the process for longer than a client would wait.
READ_TIMEOUT_SECONDS = 5.0


class GenerationUnavailable(Exception):
    """The counter could not be read (the database is down or unreachable); the call cannot be admitted."""


def unreadable(exc: BaseException) -> GenerationUnavailable:
    # The driver's error names its type only: its message may quote connection details.
    return GenerationUnavailable(f"the cache generation could not be read: {type(exc).__name__}")


class GenerationReader(Protocol):
    """One statement that reads the counter, and the connection it runs on."""

    async def read(self) -> int:
        """The counter's value now; raises GenerationUnavailable when the database cannot answer."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


class GenerationWatch:
    """The read barrier over the counter, shared by every concurrent call of one process.

    `read` is called at most once at a time. `reads` counts the statements started (so a test can check
    that concurrent callers shared them).
    """

    def __init__(self, read: Callable[[], Awaitable[int]]) -> None:
        self._read = read
        self._running: asyncio.Future[int] | None = None  # the read in flight, if any
        self._next: asyncio.Future[int] | None = None  # what the callers waiting for the next read get
        self.reads = 0

    async def current(self) -> int:
        """A value read by a statement that started after this call (raises GenerationUnavailable)."""
        if self._running is None:
            # Nothing in flight: this read starts now, after the call, when its task first runs.
            batch = self._running = self._start()
        else:
            # The read in flight may have started before this call, so it cannot answer it.
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
                self._next.add_done_callback(_retrieve)
            batch = self._next
        # Shielded: a caller that goes away (client disconnect) must not cancel the read others share.
        return await asyncio.shield(batch)

    def _start(self) -> "asyncio.Future[int]":
        self.reads += 1
        task = asyncio.ensure_future(self._read())
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: "asyncio.Future[int]") -> None:
        self._running = None
        waiting, self._next = self._next, None
        if waiting is None:
            return
        # Everyone who arrived while `task` was in flight gets the next read, which starts only now.
        following = self._running = self._start()
        following.add_done_callback(lambda done: _settle(waiting, done))


def _settle(waiting: "asyncio.Future[int]", done: "asyncio.Future[int]") -> None:
    # The read's outcome goes to the batch that waited for it; waiters are shielded, so `waiting` is
    # still pending here.
    if done.cancelled():
        waiting.cancel()
    elif (error := done.exception()) is not None:
        waiting.set_exception(error)
    else:
        waiting.set_result(done.result())


def _retrieve(future: "asyncio.Future[int]") -> None:
    # When every caller of a batch has gone away, nobody reads its error: mark it read, not "never
    # retrieved" in the log (each caller that waited has been told).
    if not future.cancelled():
        future.exception()


class SqliteGeneration:
    """The counter read from a SQLite file: on the event loop, or on a thread of its own when it must wait.

    Connections are query-only, in autocommit: each SELECT is its own read transaction, so it sees every
    transaction committed before it began. A WAL reader waits for no writer, so the read normally runs
    on the loop itself, on a connection that never waits (busy timeout 0): about 10 µs, where a hop to a
    thread and back costs over 100 µs of CPU on these machines (measured with `run_in_executor` against
    a direct read, 5,000 each). In the rare case where even a reader would wait (SQLITE_BUSY: another
    connection is recovering the WAL index), or on any other error, that read goes to the thread, whose
    connection waits up to READ_TIMEOUT_SECONDS and whose errors are the outage path.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._here: sqlite3.Connection | None = None  # used on the event loop only, never waits
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alumia-generation")
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=READ_TIMEOUT_SECONDS)
        conn.execute(f"PRAGMA busy_timeout={int(READ_TIMEOUT_SECONDS * 1000)}")
        conn.execute("PRAGMA query_only=ON")  # this connection only ever reads
        return conn

    def _read_blocking(self) -> int:
        try:
            if self._conn is None:
                self._conn = self._open()
            # sqlite3 keeps the compiled statement in the connection's cache: prepared once.
            row = self._conn.execute(READ_GENERATION).fetchone()
        except sqlite3.Error as exc:
            self._close_blocking()
            raise unreadable(exc) from exc
        if row is None:
            raise GenerationUnavailable("the cache generation row is missing (run `alumia db upgrade`)")
        return int(row[0])

    def _close_blocking(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _read_here(self) -> int | None:
        try:
            if self._here is None:
                self._here = sqlite3.connect(self._path, isolation_level=None, timeout=0,
                                             check_same_thread=False)
                self._here.execute("PRAGMA query_only=ON")
            row = self._here.execute(READ_GENERATION).fetchone()
        except sqlite3.Error:
            if self._here is not None:
                here, self._here = self._here, None
                here.close()
            return None
        return None if row is None else int(row[0])

    async def read(self) -> int:
        """The counter's value: on the loop when that waits for nothing, else on the reader's thread."""
        value = self._read_here()
        if value is not None:
            return value
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read_blocking)

    async def close(self) -> None:
        """Close the connections (the thread's on its thread), then stop the thread."""
        if self._here is not None:
            here, self._here = self._here, None
            here.close()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_blocking)
        self._thread.shutdown(wait=True)


def open_reader(url: str) -> GenerationReader | None:
    """The counter's reader for a database URL (nothing is opened until the first read).

    None for an in-memory SQLite database: each connection to one is a different database, so no other
    connection could read the counter the migrations wrote; such a process does without the cache.
    """
    path = sqlite_path(url)
    if path is None:
        # Imported here: asyncpg adds megabytes to a process that serves SQLite.
        from alumia.storage.generation_postgres import PostgresGeneration

        return PostgresGeneration(asyncpg_dsn(url))
    if path == ":memory:" or path.startswith("file::memory:"):
        return None
    return SqliteGeneration(path)

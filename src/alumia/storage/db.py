"""Engines and transactions for SQLite (the embedded default) and PostgreSQL."""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from alumia.storage.call_writes import Backend, GroupCommit, StorageUnavailable
from alumia.storage.call_writes_sqlite import SqliteCallWrites
from alumia.storage.drivers import asyncpg_dsn, sqlite_path

# Loggers that would write what the database reads or writes (session CSRF tokens, password hashes, key
# ciphertexts): aiosqlite logs each call with its arguments at DEBUG, SQLAlchemy result rows at DEBUG.
_DRIVER_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg")


def _never_log_data() -> None:
    """Keep the drivers' loggers at INFO or above, whatever the root level; with hide_parameters on every
    engine, no statement parameter or result row reaches a log."""
    for name in _DRIVER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def private_sqlite_file(url: str) -> None:
    """Make a SQLite database file readable by its owner only (0600), creating it empty if missing.

    SQLite creates the -wal and -shm files with the database file's mode, so a file made 0600 here
    keeps them private too; ones left 0644 by an older version are narrowed as well.
    """
    url_ = make_url(url)
    if url_.get_backend_name() != "sqlite" or not url_.database or url_.database == ":memory:":
        return
    path = Path(url_.database)
    if not path.parent.is_dir():
        return  # nothing to create in; opening the database reports it
    if not path.exists():
        # Only a missing file is opened here: closing any descriptor of a database file drops every
        # POSIX lock this process holds on it, and so the locks of its open SQLite connections.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            file.chmod(0o600)


def _sqlite_pragmas(dbapi_connection: object, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets readers run beside the writer; busy_timeout makes a second writer wait, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# What a database that cannot be reached raises: the driver's errors as SQLAlchemy wraps them, a pool
# that waited too long, and a connection refused or timed out before SQLAlchemy saw it.
DATABASE_DOWN: tuple[type[BaseException], ...] = (exc.DBAPIError, exc.TimeoutError, OSError, TimeoutError,
                                                  StorageUnavailable)


class Database:
    """Engines over one database: transactional reads, transactional writes, and single-statement lookups.

    SQLite allows one writer at a time and a deferred transaction that upgrades from read to write
    can fail with SQLITE_BUSY instead of waiting, so writes there take the lock up front
    (BEGIN IMMEDIATE) on their own one-connection engine. On PostgreSQL reads and writes share an
    engine. Lookups run in autocommit with no reset on return: one statement is its own snapshot, and
    skipping BEGIN/ROLLBACK saves two round trips (PostgreSQL) or thread hops (SQLite) per call.
    Pools do not overflow: a burst waits for a pooled connection rather than opening new ones.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        _never_log_data()
        quiet = {"echo": echo, "hide_parameters": True, "max_overflow": 0}
        self.lookup_engine = create_async_engine(url, pool_size=16, isolation_level="AUTOCOMMIT",
                                                 pool_reset_on_return=None, **quiet)
        if self.is_sqlite:
            private_sqlite_file(url)
            self.reader = create_async_engine(url, pool_size=8, **quiet)
            self.writer = create_async_engine(url, pool_size=1, **quiet)
            for engine in (self.reader, self.writer, self.lookup_engine):
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            for engine in (self.reader, self.writer):
                # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
                event.listen(engine.sync_engine, "connect", _disable_pysqlite_begin)
            event.listen(self.reader.sync_engine, "begin", _begin_deferred)
            event.listen(self.writer.sync_engine, "begin", _begin_immediate)
        else:
            self.reader = create_async_engine(url, pool_size=16, **quiet)
            self.writer = self.reader
        # The calls' own writes, committed in groups on the driver directly (storage/call_writes.py);
        # one writer per event loop that uses this database (a process has one).
        self._call_writes: dict[asyncio.AbstractEventLoop, GroupCommit] = {}

    @property
    def calls(self) -> GroupCommit:
        """The group-committing writer of reservations, settlements and hold closes, for this loop."""
        loop = asyncio.get_running_loop()
        writer = self._call_writes.get(loop)
        if writer is None:
            path = sqlite_path(self.url)
            if path:
                backend: Backend = SqliteCallWrites(path)
            else:
                # Imported here: asyncpg adds megabytes to a process that serves SQLite.
                from alumia.storage.call_writes_postgres import PostgresCallWrites

                backend = PostgresCallWrites(asyncpg_dsn(self.url))
            writer = self._call_writes[loop] = GroupCommit(backend)
        return writer

    @asynccontextmanager
    async def lookup(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one read statement, outside any transaction (the hot path's read)."""
        async with self.lookup_engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (one transaction, rolled back at the end)."""
        async with self.reader.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction that commits when the block ends without an exception."""
        async with self.writer.begin() as conn:
            yield conn

    async def dispose(self) -> None:
        """Close every pooled connection (and this loop's call writer, after what it has in hand)."""
        writer = self._call_writes.pop(asyncio.get_running_loop(), None)
        if writer is not None:
            await writer.close()
        await self.lookup_engine.dispose()
        await self.reader.dispose()
        if self.writer is not self.reader:
            await self.writer.dispose()


def _disable_pysqlite_begin(dbapi_connection: object, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]


def _begin_deferred(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


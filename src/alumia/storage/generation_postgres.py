"""The cache generation read on PostgreSQL: one asyncpg connection of its own, the statement prepared.

Kept apart from storage/generation.py so a process on SQLite never imports asyncpg.
"""

import asyncio
import logging

import asyncpg

from alumia.storage.generation import READ_GENERATION, READ_TIMEOUT_SECONDS, GenerationUnavailable, unreadable

log = logging.getLogger("alumia.generation")

# What asyncpg raises when the server is down, restarting, refusing connections or cut the connection.
_PG_DOWN = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)


class PostgresGeneration:
    """The counter read on one asyncpg connection of its own, with the statement prepared on it.

    One connection is enough: the watch never runs two reads at once.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._statement: asyncpg.prepared_stmt.PreparedStatement | None = None

    async def read(self) -> int:
        """The counter's value; a connection that fails is dropped and opened again.

        A connection that was open before this read may have been cut while idle (the server restarted,
        an outage ended): that failure is retried once on a new connection, so the first call after the
        database comes back is answered rather than refused. A new connection that fails is an outage.
        """
        while True:
            reused = self._statement is not None
            try:
                statement = self._statement or await self._connect()
                value = await statement.fetchval(timeout=READ_TIMEOUT_SECONDS)
                break
            except _PG_DOWN as exc:
                self._drop()
                if not reused:
                    raise unreadable(exc) from exc
                log.warning("the cache generation's connection failed (%s); opening a new one",
                            type(exc).__name__)
        if value is None:
            raise GenerationUnavailable("the cache generation row is missing (run `alumia db upgrade`)")
        return int(value)

    async def _connect(self) -> "asyncpg.prepared_stmt.PreparedStatement":
        self._conn = await asyncpg.connect(self._dsn, timeout=READ_TIMEOUT_SECONDS,
                                           server_settings={"application_name": "alumia-generation"})
        self._statement = await self._conn.prepare(READ_GENERATION)
        return self._statement

    def _drop(self) -> None:
        # terminate(), not close(): a broken connection cannot say goodbye, and this must not wait.
        if self._conn is not None:
            self._conn.terminate()
        self._conn = self._statement = None

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            conn, self._conn, self._statement = self._conn, None, None
            try:
                await asyncio.wait_for(conn.close(), READ_TIMEOUT_SECONDS)
            except (*_PG_DOWN, asyncio.CancelledError):
                conn.terminate()

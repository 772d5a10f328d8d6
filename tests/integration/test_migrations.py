"""The migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage import migrate
from alumia.storage.db import Database
from alumia.storage.tables import agents, api_keys, byok_keys, metadata

from harness import Server, drop_pg_database, fresh_database


async def test_migrated_schema_matches_the_tables(server: Server) -> None:
    # The server fixture ran `alumia db upgrade` on a fresh database of each backend.
    async with server.db.read() as conn:
        diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    assert diff == []


def _migration_0009() -> ModuleType:
    path = Path(migrate.__file__).parent / "migrations" / "versions" / "0009_cache_generation.py"
    spec = importlib.util.spec_from_file_location("migration_0009", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _triggers(conn: AsyncConnection) -> set[str]:
    if conn.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    else:
        query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    return {row[0] for row in (await conn.exec_driver_sql(query)).all()}


async def test_every_cache_generation_trigger_is_there_at_head(server: Server) -> None:
    # A later migration that rebuilds one of these tables (SQLite's batch mode copies it) drops its
    # triggers: then cached contexts would silently go stale. This says so.
    names = {name for name, _table in _migration_0009().triggers()}
    async with server.db.read() as conn:
        assert names <= await _triggers(conn)
        assert (await conn.exec_driver_sql("SELECT id FROM cache_generation")).all() == [(1,)]


def test_every_column_of_the_keys_and_agents_is_watched_but_the_ones_each_call_writes() -> None:
    watched = _migration_0009().WATCHED_UPDATES
    not_watched = {"api_keys": {"last_used_at"},
                   "byok_keys": {"last_used_at", "last_verified_at", "verification"},
                   "agents": set()}
    for table, columns in (("api_keys", api_keys), ("byok_keys", byok_keys), ("agents", agents)):
        assert set(watched[table]) == {c.name for c in columns.c} - not_watched[table], table
    assert set(watched["orgs"]) == {"slug", "cumulative_deposits_cents", "auto_topup_enabled",
                                    "auto_topup_threshold_cents"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_cache_generation_migration_upgrades_and_downgrades(backend: str, tmp_path: Path) -> None:
    url, pg_name = await fresh_database(backend, tmp_path)
    db = Database(url)
    try:
        await asyncio.to_thread(migrate.upgrade, url, "0008")
        async with db.read() as conn:
            before = await _triggers(conn)
        await asyncio.to_thread(migrate.upgrade, url)
        await db.dispose()
        async with db.read() as conn:
            assert await _triggers(conn) - before == {name for name, _ in _migration_0009().triggers()}
        await asyncio.to_thread(command.downgrade, migrate.alembic_config(url), "0008")
        await db.dispose()
        async with db.read() as conn:
            assert await _triggers(conn) == before
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            assert "cache_generation" not in tables
            if backend == "postgres":
                functions = await conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_proc WHERE proname = 'cache_generation_bump'")
                assert functions.scalar_one() == 0
        await asyncio.to_thread(migrate.upgrade, url)
        await db.dispose()
        async with db.read() as conn:
            assert await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)) == []
        # The triggers work after the round trip. A charge rewrites the deposits with their own value and
        # moves the balance and holds: the generation stays; a new slug moves it, in the same commit.
        statements = [("INSERT INTO orgs (id, slug, name, created_at) VALUES ('o1', 'a', 'A', "
                       "CURRENT_TIMESTAMP)", 0),
                      ("UPDATE orgs SET balance_microcents = balance_microcents - 5, held_microcents = 7, "
                       "cumulative_deposits_cents = cumulative_deposits_cents + 0", 0),
                      ("UPDATE orgs SET slug = 'b'", 1),
                      ("UPDATE orgs SET auto_topup_threshold_cents = auto_topup_threshold_cents + 1", 2)]
        for statement, expected in statements:
            async with db.write() as conn:
                await conn.exec_driver_sql(statement)
            async with db.read() as conn:
                value = (await conn.exec_driver_sql("SELECT value FROM cache_generation")).scalar_one()
            assert value == expected, statement
    finally:
        await db.dispose()
        if pg_name:
            await drop_pg_database(pg_name)

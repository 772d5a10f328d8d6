"""The migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from alumia.storage.tables import metadata

from harness import Server


async def test_migrated_schema_matches_the_tables(server: Server) -> None:
    # The server fixture ran `alumia db upgrade` on a fresh database of each backend.
    async with server.db.read() as conn:
        diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    assert diff == []

"""Fixtures: the simulator, and one server per database backend (SQLite file, real PostgreSQL)."""

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from alumia.sim.env import sim_env
from alumia.sim.server import SimServer

from harness import Server, create_pg_database, drop_pg_database

IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def sim() -> Iterator[SimServer]:
    """The simulated upstream for every provider."""
    with SimServer() as server:
        yield server


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def server(request: pytest.FixtureRequest, sim: SimServer,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """A running `alumia serve` on each backend; PostgreSQL is required under CI=true."""
    data_dir = tmp_path_factory.mktemp(f"alumia-{request.param}")
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{data_dir / 'alumia.db'}"
    else:
        pg_name = await create_pg_database()
        if pg_name is None:
            if IN_CI:
                pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 and CI=true")
            pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_name}"
    srv = Server(database_url=url, data_dir=data_dir, sim_env=sim_env(sim.host, sim.port),
                 label=request.param)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        await srv.db.dispose()
        if pg_name:
            await drop_pg_database(pg_name)

"""Fixtures: the simulator, one server per database backend (SQLite file, real PostgreSQL), and the
in-process gateway in front of a hostile upstream (hostile.py)."""

from collections.abc import AsyncIterator, Iterator

import pytest
from stripe_standin import SECRET_KEY, WEBHOOK_SECRET, StripeEnv, StripeStandIn

from alumia.sim.env import sim_env
from alumia.sim.server import SimServer

from harness import Server, running_server
from hostile import Gateway, Upstream, gateway


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
    async with running_server(request.param, data_dir, sim_env(sim.host, sim.port), request.param) as srv:
        yield srv


@pytest.fixture(scope="module")
def standin() -> Iterator[StripeStandIn]:
    """The local stand-in for Stripe's API, one per test module."""
    with StripeStandIn() as fake:
        yield fake


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def env(request: pytest.FixtureRequest, sim: SimServer, standin: StripeStandIn,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StripeEnv]:
    """A server configured for Stripe against the stand-in, on each backend."""
    data_dir = tmp_path_factory.mktemp(f"alumia-stripe-{request.param}")
    extra = {"ALUMIA_STRIPE_SECRET_KEY": SECRET_KEY, "ALUMIA_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
             "ALUMIA_STRIPE_API_BASE": standin.base_url, "ALUMIA_PUBLIC_URL": "https://alumia.test"}
    server_env = {**sim_env(sim.host, sim.port), **extra}
    async with running_server(request.param, data_dir, server_env, f"stripe-{request.param}") as srv:
        yield StripeEnv(srv, standin)


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    """The hostile upstream, one per test module; each test sets its `script`."""
    async with Upstream().running() as running:
        yield running


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def gw(request: pytest.FixtureRequest, upstream: Upstream,
             tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """The gateway in process on each backend, every provider pointed at `upstream`."""
    data_dir = tmp_path_factory.mktemp(f"{request.module.__name__}-{request.param}")
    async with gateway(request.param, data_dir, upstream) as running:
        yield running

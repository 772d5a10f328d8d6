"""A real server, the simulator, and headless Debian Chromium driven by Playwright."""

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from alumia.sim.env import sim_env
from alumia.sim.server import SimServer

from harness import Server

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# Flags as the machine's own probe uses them: no sandbox as root, and no background network traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def sim() -> Iterator[SimServer]:
    """The simulated upstream for every provider."""
    with SimServer() as server:
        yield server


@pytest.fixture(scope="session")
async def web(sim: SimServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One `alumia serve` on SQLite for the browser tests."""
    data_dir = tmp_path_factory.mktemp("alumia-web")
    srv = Server(database_url=f"sqlite+aiosqlite:///{data_dir / 'alumia.db'}", data_dir=data_dir,
                 sim_env=sim_env(sim.host, sim.port), label="web")
    srv.start()
    yield srv
    srv.stop()
    await srv.db.dispose()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from Debian's package; required under CI=true, skipped elsewhere without it."""
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; `make test` installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                    args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    """A page in that profile."""
    return await context.new_page()


async def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def sign_in(page: Page, server: Server, email: str, password: str) -> None:
    """Sign in through the form, as a person would."""
    await page.goto(f"{server.base_url}/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state("networkidle")

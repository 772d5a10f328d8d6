"""A seeded, replayable randomized test of the money path (issue 5, shared/security.md 13-17 and 20).

A hypothesis `RuleBasedStateMachine` drives one new org per example on the real `alumia serve`
(the `server` fixture: SQLite, and PostgreSQL when it is reachable) plus a SECOND server process
started once per test on the same database and data dir (the "other process"; calls go to either),
through interleaved steps:

- platform calls that succeed (plain and streamed), fail upstream (`[[sim:status=500]]`), are cut
  mid-stream by the provider (`[[sim:cut_after=2]]`), or are too dear for what is left (402);
- client disconnects: a stream closed by the client after its first chunk (rare: the slow step);
- BYOK: one rule adds an OpenAI key, after which OpenAI-model calls go BYOK (no hold, no charge);
- direct deposits with an Idempotency-Key, sometimes replayed;
- infrastructure meter events (a `billing:meter` key) with ids sometimes replayed with the same body;
- a dead process's hold (an open hold past its expiry, written as a crashed process leaves it) and
  the sweeper `expire_stale`.

After EVERY step the invariants are read straight from the database: the cached balance equals the
sum of the org's ledger entries; no ledger idempotency key is repeated; every hold is in exactly one
of open/settled/released/expired, settled ≤ reserved and equal to its usage record's charge, and the
only open holds are the dead process's ones, whose sum is `held_microcents`; the balance equals the
start credit + deposits − usage charges − service charges computed from the usage_records and
meter_events rows, and the deposits and meter events are exactly the distinct keys/ids the test sent.
At the end of each example the sweeper runs and no hold is open, held = 0.

Not covered here (see test_stripe.py, test_holds.py): Stripe webhooks and refunds (the `server`
fixture has no Stripe, so deposits are direct), and a kill -9 of a server mid-call (the dead hold is
written the way a crashed process leaves it instead).

Runs: `make test` runs DEFAULT_EXAMPLES examples of up to STEPS steps on SQLite and a fifth of that on
PostgreSQL. A longer run:

    ALUMIA_MONEY_SIM_EXAMPLES=5000 .venv/bin/pytest tests/integration/test_money_simulation.py
    ALUMIA_MONEY_SIM_STEPS=40 ...            # longer sequences per example
    ALUMIA_MONEY_SIM_RANDOM=1 .venv/bin/pytest ... --hypothesis-seed=123   # other sequences, seeded

By default the run is derandomized (hypothesis's fixed seed): the same sequences every time. A failure
prints the shrunk step sequence ("state.call(...)" lines: a readable program of the failing run) and
hypothesis's `@reproduce_failure('<version>', b'...')` blob (print_blob=True). To replay, rerun the same
command (same environment variables and --hypothesis-seed): the derandomized run draws the same
sequences and shrinks to the same case. The hypothesis example database is off (database=None), so a
run never depends on an earlier one.
"""

import asyncio
import os
import secrets
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from alumia.clock import utcnow
from alumia.services import accounts
from alumia.services.holds import expire_stale
from alumia.sim.env import sim_env
from alumia.sim.server import SimServer
from alumia.storage import holds as hold_rows
from alumia.storage.db import Database
from alumia.storage.tables import holds, ledger_entries, meter_events, orgs, usage_records

from harness import Server, fake_key

DEFAULT_EXAMPLES = 200
EXAMPLES = int(os.environ.get("ALUMIA_MONEY_SIM_EXAMPLES", DEFAULT_EXAMPLES))
STEPS = int(os.environ.get("ALUMIA_MONEY_SIM_STEPS", 10))
RANDOM = os.environ.get("ALUMIA_MONEY_SIM_RANDOM") == "1"
START = 10_000_000  # the early-bird credit every new org starts with, in microcents
CENT = 10_000  # microcents
HOLD_STATUSES = {"open", "settled", "released", "expired"}
CHAT = "/v1/chat/completions"
PLATFORM_MODELS = ("gpt-5.6-luna", "claude-haiku-4-5")  # openai goes BYOK once the org has a key
METER_CASES = (("storage", "730"), ("browser_session", "12.5"), ("sandbox", "3"),
               ("collaboration", "2"), ("collaboration", "60"))  # 60 seat-days = $6.00


@dataclass
class World:
    """What every example shares: its own event loop and database handle, and the two servers."""

    loop: asyncio.AbstractEventLoop
    db: Database
    servers: list[Server]
    clients: list[httpx.Client]
    owner_email: str

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)


class MoneyMachine(RuleBasedStateMachine):
    world: World  # set by the test before running

    @initialize()
    def new_org(self) -> None:
        w = self.world
        srv = w.servers[0]
        slug = "sim-" + secrets.token_hex(5)
        # One owner for every example's org: a new user would cost an Argon2 hash (~0.2 s) per example.
        created = w.run(accounts.create_org(w.db, srv.settings, slug=slug, owner_email=w.owner_email))
        self.org_id = created["id"]
        owner_key = accounts.create_api_key_for(w.db, srv.settings, org_slug=slug, user_email=None)
        self.key = w.run(owner_key)["key"]
        # The same service `alumia apikey create --scope billing:meter` calls (test_meters.py uses the CLI).
        self.meter_key = w.run(accounts.create_api_key_for(w.db, srv.settings, org_slug=slug, user_email=None,
                                                           name="meter", scopes="billing:meter"))["key"]
        self.deposits: dict[str, int] = {}  # idempotency key -> cents
        self.events: dict[str, dict] = {}  # meter event id -> body
        self.dead_holds: list[str] = []
        self.byok = False

    # --- HTTP helpers -------------------------------------------------------------------------
    def post(self, which: int, path: str, body: dict, key: str | None = None,
             headers: dict | None = None) -> httpx.Response:
        return self.world.clients[which].post(path, json=body, headers={
            "Authorization": f"Bearer {key or self.key}", **(headers or {})})

    def wait_for_holds_to_close(self, request_id: str | None = None) -> None:
        """A call's hold closes when the server finishes metering it, which may trail the client."""
        deadline = time.monotonic() + 5
        while True:
            open_ids = set(self.world.run(self._open_hold_ids())) - set(self.dead_holds)
            if not open_ids or time.monotonic() > deadline:
                assert not open_ids, f"holds still open after their calls ended: {open_ids}"
                return
            time.sleep(0.01)

    async def _open_hold_ids(self) -> list[str]:
        async with self.world.db.read() as conn:
            rows = await conn.execute(select(holds.c.id).where(holds.c.org_id == self.org_id,
                                                               holds.c.status == "open"))
            return [r[0] for r in rows]

    # --- rules --------------------------------------------------------------------------------
    @rule(which=st.integers(0, 1), model=st.sampled_from(PLATFORM_MODELS),
          fault=st.sampled_from(["", "", " [[sim:status=500]]"]), stream=st.booleans(),
          big=st.integers(0, 4))
    def call(self, which: int, model: str, fault: str, stream: bool, big: int) -> None:
        # `big` 0: a reservation of a few dollars (sol, 200k output tokens), refused once money is short.
        body = {"model": "gpt-5.6-sol" if big == 0 else model, "max_tokens": 200_000 if big == 0 else 64,
                "stream": stream, "messages": [{"role": "user", "content": "a b c d" + fault}]}
        response = self.post(which, CHAT, body)
        byok = self.byok and body["model"].startswith("gpt")
        if response.status_code == 402:
            # Platform: refused before sending. BYOK: never refused by us; the simulated provider may
            # answer a huge max_tokens with its own 402, passed on as PROVIDER_BILLING_ERROR.
            expected = "PROVIDER_BILLING_ERROR" if byok else "PAYMENT_REQUIRED"
            assert response.json()["error"]["code"] == expected, response.text
        elif fault:
            assert response.status_code >= 500 or (stream and response.status_code == 200), response.text
        else:
            assert response.status_code == 200, response.text
        self.wait_for_holds_to_close()

    @rule(which=st.integers(0, 1), model=st.sampled_from(PLATFORM_MODELS))
    def provider_cuts_the_stream(self, which: int, model: str) -> None:
        response = self.post(which, CHAT, {"model": model, "max_tokens": 64, "stream": True, "messages": [
            {"role": "user", "content": "a b c d e f g h [[sim:cut_after=2]]"}]})
        assert response.status_code in (200, 402), response.text
        self.wait_for_holds_to_close()

    @rule(which=st.integers(0, 1), model=st.sampled_from(PLATFORM_MODELS), rare=st.integers(0, 3))
    def client_disconnects(self, which: int, model: str, rare: int) -> None:
        if rare:  # keep the slow step rare
            return
        body = {"model": model, "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": " ".join(["word"] * 60)}]}
        with self.world.clients[which].stream("POST", CHAT, json=body,
                                              headers={"Authorization": f"Bearer {self.key}"}) as response:
            if response.status_code == 200:
                next(response.iter_raw())
        self.wait_for_holds_to_close()

    @precondition(lambda self: not self.byok)
    @rule()
    def add_byok_key(self) -> None:
        response = self.post(0, "/api/v1/billing/byok-keys",
                             {"provider": "openai", "apiKey": fake_key("sk-proj-test-")})
        assert response.status_code == 201, response.text
        self.byok = True

    @rule(which=st.integers(0, 1), cents=st.sampled_from([500, 1_234, 10_000]), replay=st.booleans())
    def deposit(self, which: int, cents: int, replay: bool) -> None:
        if replay and self.deposits:
            key = sorted(self.deposits)[cents % len(self.deposits)]
            cents = self.deposits[key]
        else:
            key = "dep-" + secrets.token_hex(6)
        response = self.post(which, "/api/v1/billing/deposit", {"amountCents": cents},
                             headers={"Idempotency-Key": key})
        if key in self.deposits:  # a replay credits nothing more; the server answers 409
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "CONFLICT"
        else:
            assert response.status_code == 201, response.text
        self.deposits[key] = cents

    @rule(which=st.integers(0, 1), case=st.sampled_from(METER_CASES), replay=st.booleans())
    def meter_event(self, which: int, case: tuple[str, str], replay: bool) -> None:
        if replay and self.events:
            body = self.events[sorted(self.events)[len(case[1]) % len(self.events)]]
        else:
            body = {"id": "evt_" + secrets.token_hex(8), "service": case[0], "quantity": case[1],
                    "occurredAt": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        response = self.post(which, "/api/v1/billing/usage-events", body, key=self.meter_key)
        assert response.status_code == (200 if body["id"] in self.events else 201), response.text
        self.events[body["id"]] = body

    @rule(amount=st.sampled_from([1_000, 250_000]))
    def a_process_dies_holding(self, amount: int) -> None:
        """An open hold past its expiry: what a process killed mid-call leaves behind."""
        hold_id = f"req_dead_{secrets.token_hex(8)}"
        now = utcnow()

        async def plant() -> bool:
            async with self.world.db.write() as conn:
                return await hold_rows.reserve(conn, hold_id=hold_id, org_id=self.org_id, amount=amount,
                                               now=now - timedelta(hours=1),
                                               expires_at=now - timedelta(minutes=1))
        if self.world.run(plant()):
            self.dead_holds.append(hold_id)

    @rule()
    def sweep(self) -> None:
        self.world.run(expire_stale(self.world.db))
        assert not set(self.world.run(self._open_hold_ids())) & set(self.dead_holds)

    # --- invariants, straight from the database -------------------------------------------------
    @invariant()
    def money_adds_up(self) -> None:
        self.world.run(self._check())

    async def _check(self) -> None:
        org = self.org_id
        async with self.world.db.read() as conn:
            balance, held = (await conn.execute(select(orgs.c.balance_microcents, orgs.c.held_microcents)
                                                .where(orgs.c.id == org))).one()
            entries = [r._mapping for r in await conn.execute(
                select(ledger_entries.c.type, ledger_entries.c.amount_microcents, ledger_entries.c.request_id,
                       ledger_entries.c.idempotency_key).where(ledger_entries.c.org_id == org))]
            hold_list = [r._mapping for r in await conn.execute(select(holds).where(holds.c.org_id == org))]
            usage = {r.id: r for r in await conn.execute(
                select(usage_records.c.id, usage_records.c.charged_microcents, usage_records.c.byok)
                .where(usage_records.c.org_id == org))}
            meters = [r._mapping for r in await conn.execute(
                select(meter_events.c.event_id, meter_events.c.charged_microcents)
                .where(meter_events.c.org_id == org))]
            unique_keys = (await conn.execute(select(func.count(), func.count(ledger_entries.c.idempotency_key
                                                                              .distinct()))
                                              .where(ledger_entries.c.org_id == org))).one()
        # 13: the cached balance is the sum of the entries; nothing posted twice.
        assert balance == sum(e["amount_microcents"] for e in entries)
        assert unique_keys[0] == unique_keys[1] == len(entries)
        by_type: dict[str, int] = {}
        for e in entries:
            by_type[e["type"]] = by_type.get(e["type"], 0) + e["amount_microcents"]
        assert set(by_type) <= {"promo_credit", "deposit", "usage_charge", "service_charge"}, by_type
        # 15: each deposit key and meter event id the test sent is credited/charged exactly once.
        assert by_type.get("deposit", 0) == sum(self.deposits.values()) * CENT
        assert sum(e["type"] == "deposit" for e in entries) == len(self.deposits)
        assert sorted(m["event_id"] for m in meters) == sorted(self.events)
        service = sum(m["charged_microcents"] for m in meters)
        assert by_type.get("service_charge", 0) == -service
        assert sum(e["type"] == "service_charge" for e in entries) == sum(m["charged_microcents"] > 0
                                                                          for m in meters)
        # Usage charges: one entry per charged usage record, for exactly its charge; BYOK pays nothing.
        charged = {e["request_id"]: -e["amount_microcents"] for e in entries if e["type"] == "usage_charge"}
        assert charged == {rid: u.charged_microcents for rid, u in usage.items() if u.charged_microcents}
        assert all(u.charged_microcents == 0 for u in usage.values() if u.byok)
        usage_total = sum(u.charged_microcents for u in usage.values())
        # 20: the balance is the start plus deposits minus charges, computed from the rows.
        assert balance == START + sum(self.deposits.values()) * CENT - usage_total - service
        # 17: every hold is closed exactly once, settled <= reserved and equal to its call's charge.
        open_amount = 0
        for h in hold_list:
            assert h["status"] in HOLD_STATUSES
            if h["status"] == "open":
                assert h["id"] in self.dead_holds, f"hold {h['id']} is open after its call ended"
                assert h["closed_at"] is None
                open_amount += h["amount_microcents"]
                continue
            assert h["closed_at"] is not None
            if h["status"] == "settled":
                assert 0 < h["charged_microcents"] <= h["amount_microcents"]
                assert usage[h["id"]].charged_microcents == h["charged_microcents"]
                assert not usage[h["id"]].byok
            elif h["status"] == "released":
                assert h["charged_microcents"] in (0, None)
                assert h["id"] not in charged
            else:  # expired: only what a dead process left
                assert h["id"] in self.dead_holds and h["charged_microcents"] is None
        assert held == open_amount
        # Every platform charge went through a hold.
        assert set(charged) <= {h["id"] for h in hold_list if h["status"] == "settled"}

    def teardown(self) -> None:
        if not hasattr(self, "org_id"):
            return
        self.world.run(expire_stale(self.world.db))
        async def final() -> tuple[int, int]:
            async with self.world.db.read() as conn:
                held = (await conn.execute(select(orgs.c.held_microcents).where(orgs.c.id == self.org_id))
                        ).scalar_one()
                still_open = (await conn.execute(select(func.count()).select_from(holds).where(
                    holds.c.org_id == self.org_id, holds.c.status == "open"))).scalar_one()
            return int(held), int(still_open)
        assert self.world.run(final()) == (0, 0)


@pytest.fixture
def world(server: Server, sim: SimServer) -> Iterator[World]:
    """A private event loop and database handle, and a second server process on the same database."""
    url = server.env["ALUMIA_DATABASE_URL"]
    second = Server(database_url=url, data_dir=Path(server.env["ALUMIA_DATA_DIR"]),
                    sim_env=sim_env(sim.host, sim.port), label="money-sim-" + url.split("+")[0])
    second.start()
    loop = asyncio.new_event_loop()
    db = Database(server.env["ALUMIA_DATABASE_URL"])
    clients = [httpx.Client(base_url=s.base_url, timeout=30) for s in (server, second)]
    try:
        yield World(loop=loop, db=db, servers=[server, second], clients=clients,
                    owner_email=f"money-sim-{secrets.token_hex(4)}@owner.test")
    finally:
        for client in clients:
            client.close()
        second.stop()
        loop.run_until_complete(db.dispose())
        loop.close()


def test_money_simulation(world: World, server: Server) -> None:
    examples = EXAMPLES if "sqlite" in server.env["ALUMIA_DATABASE_URL"] else max(EXAMPLES // 5, 10)
    MoneyMachine.world = world
    run_state_machine_as_test(MoneyMachine, settings=settings(
        max_examples=examples, stateful_step_count=STEPS, deadline=None, print_blob=True,
        derandomize=not RANDOM, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))

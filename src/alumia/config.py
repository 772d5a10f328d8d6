"""Settings from the environment (ALUMIA_*), validated once at start."""

import hashlib
import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from alumia.domain.catalog import PROVIDER_NAMES
from alumia.domain.services_pricing import ServicePrices
from alumia.services.chat_request import RequestLimits


class Settings(BaseSettings):
    """Everything the service reads from its environment.

    Per-provider values use dynamic names, ALUMIA_PLATFORM_KEY_<PROVIDER> and ALUMIA_BASE_URL_<PROVIDER>;
    `from_env` gathers them into `platform_keys` and `base_urls`.
    """

    model_config = SettingsConfigDict(env_prefix="ALUMIA_", extra="ignore")

    env: Literal["development", "production"] = Field("development", description=(
        "Production requires ALUMIA_MASTER_KEYS, issues `alm_live_` API keys (development: `alm_test_`) and "
        "refuses direct deposits."))
    data_dir: Path = Field(Path(".alumia"), description=(
        "Where the embedded default keeps its SQLite file, its generated key file (master.keys), the "
        "metering journal (outbox/) and the demo's login."))
    database_url: str = Field("", description=(
        "`sqlite+aiosqlite:///path` or `postgresql+asyncpg://user:password@host/db`; empty: SQLite at `<data"
        " dir>/alumia.db`."))
    master_keys: SecretStr | None = Field(None, description=(
        "Versioned key-encryption keys, `1:<base64 of 32 bytes>[,2:...]`; the highest version encrypts. "
        "Unset outside production: generated once into `<data dir>/master.keys`."))
    log_level: str = Field("INFO", description="The level of the service's logs: DEBUG, INFO, WARNING...")
    fee_bps: int = Field(550, ge=0, le=10_000, description=(
        "The platform fee on the list-price cost of a platform-routed call, in basis points (550 = 5.5%)."))
    waiver_threshold_cents: int = Field(10_000, ge=0, description=(
        "The fee is waived until an org's cumulative deposits exceed this many cents."))
    early_bird_credit_cents: int = Field(1_000, ge=0, description=(
        "Promotional credit, in cents, given once to an org created while the early-bird offer is open; 0 "
        "for none."))
    early_bird_ends: date | None = Field(None, description=(
        "Last day (YYYY-MM-DD) of the early-bird offer; unset: open."))
    upstream_timeout_seconds: float = Field(300.0, gt=0, description=(
        "How long one provider call may take, stream included, before it is cut."))
    key_check_timeout_seconds: float = Field(5.0, gt=0, description=(
        "How long the provider may take to answer the check of a BYOK key being added."))
    hold_sweep_seconds: float = Field(30.0, gt=0, description=(
        "How often each process expires holds left open by calls that never finished and replays unwritten "
        "metering."))
    # A provider's non-streamed answer larger than this is refused as the provider's error (502).
    max_upstream_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description=(
        "A provider's non-streamed answer larger than this is refused as the provider's error (502)."))
    platform_keys: dict[str, SecretStr] = Field(default_factory=dict, exclude=True, description=(
        "The platform's own key for a provider: its account pays for that provider's platform-routed calls. "
        "Without it (and without a BYOK key) a call to that provider is a 503."))
    base_urls: dict[str, str] = Field(default_factory=dict, description=(
        "Where a provider's API is reached (the simulator, a proxy, a regional endpoint); unset: the "
        "provider's production endpoint."))

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("ALUMIA_DATABASE_URL must use sqlite+aiosqlite:// or postgresql+asyncpg:// "
                             "(for a postgres:// or postgresql:// URL, write postgresql+asyncpg://)")
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the SQLite file of the embedded default."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'alumia.db'}"

    @property
    def outbox_dir(self) -> Path:
        """Where each process journals the calls it meters (storage/outbox.py), shared by the processes
        of one database: `<data_dir>/outbox/<digest of the database URL>`.

        Per database because a dead process's calls must be replayed into its own database: processes
        that share a data dir but not a database (`alumia demo` on SQLite beside a server on
        PostgreSQL) never see each other's journals. The digest leaves the password out (rotating it
        keeps the directory) and uses the absolute path of a SQLite file.
        """
        url = make_url(self.resolved_database_url)
        if url.get_backend_name() == "sqlite" and url.database:
            url = url.set(database=str(Path(url.database).resolve()))
        digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()
        return self.data_dir / "outbox" / digest[:16]

    @property
    def is_production(self) -> bool:
        """True when ALUMIA_ENV=production."""
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        """Build settings from an environment mapping (default: os.environ)."""
        environ = os.environ if environ is None else environ
        keys: dict[str, SecretStr] = {}
        urls: dict[str, str] = {}
        for provider in PROVIDER_NAMES:
            suffix = provider.upper()
            if key := environ.get(f"ALUMIA_PLATFORM_KEY_{suffix}", "").strip():
                keys[provider] = SecretStr(key)
            if url := environ.get(f"ALUMIA_BASE_URL_{suffix}", "").strip():
                urls[provider] = url.rstrip("/")
        fixed = {
            name: environ[f"ALUMIA_{name.upper()}"]
            for name in cls.model_fields
            if name not in ("platform_keys", "base_urls") and f"ALUMIA_{name.upper()}" in environ
        }
        return cls.model_validate({**fixed, "platform_keys": keys, "base_urls": urls, **overrides})

    def early_bird_open(self, today: date) -> bool:
        """The early-bird offer is open until its end date, and open when none is set."""
        return self.early_bird_ends is None or today <= self.early_bird_ends

    # Stripe deposits: Checkout with the secret key, webhooks verified with the signing secret.
    stripe_secret_key: SecretStr | None = Field(None, description=(
        "Stripe secret key: when set, API deposits go through Stripe Checkout."))
    stripe_webhook_secret: SecretStr | None = Field(None, description=(
        "Stripe webhook signing secret (`whsec_...`): webhooks are verified with it."))
    stripe_api_base: str = Field("https://api.stripe.com", description=(
        "Stripe's API address (a stand-in in tests)."))
    public_url: str = Field("http://127.0.0.1:8000", description=(
        "The dashboard's public address, for Stripe Checkout's return URLs."))
    deposit_min_cents: int = Field(500, ge=1, description=(
        "The smallest deposit or auto top-up amount, in cents."))
    deposit_max_cents: int = Field(1_000_000, ge=1, description=(
        "The largest deposit or auto top-up amount, in cents."))

    @field_validator("stripe_api_base", "public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @property
    def stripe_configured(self) -> bool:
        """True when a Stripe secret key is set: API deposits go through Stripe Checkout."""
        return bool(self.stripe_secret_key and self.stripe_secret_key.get_secret_value().strip())

    @property
    def stripe_webhook_configured(self) -> bool:
        """True when a Stripe webhook signing secret is set."""
        return bool(self.stripe_webhook_secret and self.stripe_webhook_secret.get_secret_value().strip())

    # Infrastructure service prices, integer microcents per metered unit;
    # units and defaults in domain/services_pricing.py.
    service_price_storage_gb_hour_microcents: int = Field(100, ge=0, description=(
        "Storage, microcents per GB-hour."))
    service_price_browser_session_minute_microcents: int = Field(2_000, ge=0, description=(
        "Browser sessions, microcents per minute."))
    service_price_sandbox_minute_microcents: int = Field(1_000, ge=0, description=(
        "Sandboxes, microcents per minute."))
    service_price_collaboration_seat_day_microcents: int = Field(100_000, ge=0, description=(
        "Collaboration, microcents per seat-day."))

    @property
    def service_prices(self) -> ServicePrices:
        """The infrastructure service prices these settings name."""
        return ServicePrices(
            storage_gb_hour=self.service_price_storage_gb_hour_microcents,
            browser_session_minute=self.service_price_browser_session_minute_microcents,
            sandbox_minute=self.service_price_sandbox_minute_microcents,
            collaboration_seat_day=self.service_price_collaboration_seat_day_microcents)

    # Auto top-up: a started off-session payment blocks another for the same org until its
    # webhook arrives, or for this long if it never does.
    auto_topup_in_flight_seconds: float = Field(1_800.0, gt=0, description=(
        "How long a started auto top-up whose webhook never came blocks the org's next one."))
    auto_topup_max_threshold_cents: int = Field(1_000_000, ge=0, description=(
        "The highest balance, in cents, an org may set as its auto top-up threshold."))

    # Sign-in: argon2 checks run on this many threads per process; failed sign-ins are
    # throttled per account (email) and per client address, in memory per process
    # (services/sign_in_guard.py, rule in domain/throttle.py).
    password_hash_concurrency: int = Field(2, ge=1, le=64, description=(
        "Password checks (argon2) run at once per process; more wait their turn."))
    signin_account_free_failures: int = Field(5, ge=0, description=(
        "Failed sign-ins of one account, within the window, before each further attempt waits."))
    signin_account_lock_failures: int = Field(10, ge=1, description=(
        "Failed sign-ins of one account, within the window, that lock it for the lock time."))
    signin_address_free_failures: int = Field(20, ge=0, description=(
        "As the account's, for one client address."))
    signin_address_lock_failures: int = Field(50, ge=1, description=(
        "As the account's, for one client address."))
    signin_window_seconds: float = Field(900.0, gt=0, description=(
        "How long failed sign-ins are counted from the first one."))
    signin_lock_seconds: float = Field(900.0, gt=0, description=(
        "How long a locked account or address is refused."))
    signin_backoff_base_seconds: float = Field(1.0, gt=0, description=(
        "The first wait after the free failures; it doubles with each further failure."))
    signin_backoff_max_seconds: float = Field(30.0, gt=0, description=(
        "The longest wait between attempts before the lock."))
    signin_throttle_max_entries: int = Field(50_000, ge=1, description=(
        "Accounts (and, separately, addresses) the throttle remembers per process; ~27 MB for both when "
        "full."))
    # Reverse proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips, e.g.
    # "10.0.0.5,10.1.0.0/16"); empty: the connecting address is the client and the header is ignored.
    trusted_proxies: str = Field("", description=(
        "Reverse proxies whose X-Forwarded-For names the client (e.g. `10.0.0.5,10.1.0.0/16`); empty: the "
        "header is ignored."))

    @model_validator(mode="after")
    def _locks_after_free_failures(self) -> "Settings":
        for kind in ("account", "address"):
            if getattr(self, f"signin_{kind}_lock_failures") <= getattr(self, f"signin_{kind}_free_failures"):
                raise ValueError(f"ALUMIA_SIGNIN_{kind.upper()}_LOCK_FAILURES must be above "
                                 f"ALUMIA_SIGNIN_{kind.upper()}_FREE_FAILURES")
        return self

    # Request limits: bounds on one chat request, far above what a real agent sends
    # (docs/behaviour.md "Request limits"); past them the call is a 422 before anything is priced.
    max_messages: int = Field(2_048, ge=1, description="Messages in one chat request; more is a 422.")
    max_content_parts: int = Field(8_192, ge=1, description=(
        "Content parts across one chat request's messages; more is a 422."))

    @property
    def request_limits(self) -> RequestLimits:
        """The limits services/chat_request.py checks each chat request against."""
        return RequestLimits(max_messages=self.max_messages, max_content_parts=self.max_content_parts,
                             max_body_bytes=self.gateway_body_limit_bytes)

    # Request bodies and concurrency (alumia/http_limits.py). A body over its route's
    # limit is refused with 413, one that takes longer than the timeout (from its first read) with 408.
    # The gateway's limit holds a large multimodal call; the dashboard's holds its largest form (an
    # agent's two 20,000-character fields, percent-encoded); the webhook and /login are read before
    # anyone is known, so theirs are small.
    gateway_body_limit_bytes: int = Field(8 * 1024 * 1024, ge=1, description=(
        "Largest request body on `/v1/...` (a large multimodal call); larger is a 413."))
    api_body_limit_bytes: int = Field(1024 * 1024, ge=1, description=(
        "Largest request body on `/api/v1/...`."))
    webhook_body_limit_bytes: int = Field(256 * 1024, ge=1, description=(
        "Largest Stripe webhook body (read before its signature is checked)."))
    page_body_limit_bytes: int = Field(512 * 1024, ge=1, description="Largest dashboard form body.")
    login_body_limit_bytes: int = Field(16 * 1024, ge=1, description=(
        "Largest `POST /login` body (read before anyone is known)."))
    body_read_timeout_seconds: float = Field(30.0, gt=0, description=(
        "How long a request body may take to arrive, from its first read; longer is a 408."))
    # Requests in flight per process (a stream counts until its end); past it, 503 with Retry-After.
    max_concurrent_requests: int = Field(1024, ge=1, description=(
        "Requests in flight per process (a stream counts until its end); past it, 503 with Retry-After."))
    responses_retention_days: int = Field(30, ge=1, le=3650, description=(
        "How long a stored Response (POST /v1/responses with store, the default) and its input items are "
        "kept for GET, input_items and previous_response_id; older ones count as gone and the sweeper "
        "deletes them."))
    context_cache_entries: int = Field(4096, ge=0, description=(
        "Callers' contexts kept in memory per process (docs/hot-path.md; a few KB each, mostly the org's "
        "key ciphertexts); 0 reads the context from the database on every call."))

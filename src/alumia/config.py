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

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path(".alumia")
    database_url: str = ""
    master_keys: SecretStr | None = None
    log_level: str = "INFO"
    fee_bps: int = Field(550, ge=0, le=10_000)
    waiver_threshold_cents: int = Field(10_000, ge=0)
    early_bird_credit_cents: int = Field(1_000, ge=0)
    early_bird_ends: date | None = None
    upstream_timeout_seconds: float = Field(300.0, gt=0)
    key_check_timeout_seconds: float = Field(5.0, gt=0)
    hold_sweep_seconds: float = Field(30.0, gt=0)
    # A provider's non-streamed answer larger than this is refused as the provider's error (502).
    max_upstream_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    platform_keys: dict[str, SecretStr] = Field(default_factory=dict, exclude=True)
    base_urls: dict[str, str] = Field(default_factory=dict)

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

    # Stripe deposits (issue 5): Checkout with the secret key, webhooks verified with the signing secret.
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str = "https://api.stripe.com"
    public_url: str = "http://127.0.0.1:8000"  # the dashboard's address, for Checkout's return URLs
    deposit_min_cents: int = Field(500, ge=1)
    deposit_max_cents: int = Field(1_000_000, ge=1)

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

    # Infrastructure service prices (issue 5), integer microcents per metered unit;
    # units and defaults in domain/services_pricing.py.
    service_price_storage_gb_hour_microcents: int = Field(100, ge=0)
    service_price_browser_session_minute_microcents: int = Field(2_000, ge=0)
    service_price_sandbox_minute_microcents: int = Field(1_000, ge=0)
    service_price_collaboration_seat_day_microcents: int = Field(100_000, ge=0)

    @property
    def service_prices(self) -> ServicePrices:
        """The infrastructure service prices these settings name."""
        return ServicePrices(
            storage_gb_hour=self.service_price_storage_gb_hour_microcents,
            browser_session_minute=self.service_price_browser_session_minute_microcents,
            sandbox_minute=self.service_price_sandbox_minute_microcents,
            collaboration_seat_day=self.service_price_collaboration_seat_day_microcents)

    # Auto top-up (issue 5): a started off-session payment blocks another for the same org until its
    # webhook arrives, or for this long if it never does.
    auto_topup_in_flight_seconds: float = Field(1_800.0, gt=0)
    auto_topup_max_threshold_cents: int = Field(1_000_000, ge=0)

    # Sign-in (issue 9): argon2 checks run on this many threads per process; failed sign-ins are
    # throttled per account (email) and per client address, in memory per process
    # (services/sign_in_guard.py, rule in domain/throttle.py).
    password_hash_concurrency: int = Field(2, ge=1, le=64)
    signin_account_free_failures: int = Field(5, ge=0)
    signin_account_lock_failures: int = Field(10, ge=1)
    signin_address_free_failures: int = Field(20, ge=0)
    signin_address_lock_failures: int = Field(50, ge=1)
    signin_window_seconds: float = Field(900.0, gt=0)
    signin_lock_seconds: float = Field(900.0, gt=0)
    signin_backoff_base_seconds: float = Field(1.0, gt=0)
    signin_backoff_max_seconds: float = Field(30.0, gt=0)
    signin_throttle_max_entries: int = Field(50_000, ge=1)  # per log; ~27 MB for both when full
    # Reverse proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips, e.g.
    # "10.0.0.5,10.1.0.0/16"); empty: the connecting address is the client and the header is ignored.
    trusted_proxies: str = ""

    @model_validator(mode="after")
    def _locks_after_free_failures(self) -> "Settings":
        for kind in ("account", "address"):
            if getattr(self, f"signin_{kind}_lock_failures") <= getattr(self, f"signin_{kind}_free_failures"):
                raise ValueError(f"ALUMIA_SIGNIN_{kind.upper()}_LOCK_FAILURES must be above "
                                 f"ALUMIA_SIGNIN_{kind.upper()}_FREE_FAILURES")
        return self

    # Request limits (issue 9, item 3): bounds on one chat request, far above what a real agent sends
    # (docs/behaviour.md "Request limits"); past them the call is a 422 before anything is priced.
    max_messages: int = Field(2_048, ge=1)
    max_content_parts: int = Field(8_192, ge=1)

    @property
    def request_limits(self) -> RequestLimits:
        """The limits services/chat_request.py checks each chat request against."""
        return RequestLimits(max_messages=self.max_messages, max_content_parts=self.max_content_parts,
                             max_body_bytes=self.gateway_body_limit_bytes)

    # Request bodies and concurrency (issue 9, item 1; alumia/http_limits.py). A body over its route's
    # limit is refused with 413, one that takes longer than the timeout (from its first read) with 408.
    # The gateway's limit holds a large multimodal call; the dashboard's holds its largest form (an
    # agent's two 20,000-character fields, percent-encoded); the webhook and /login are read before
    # anyone is known, so theirs are small.
    gateway_body_limit_bytes: int = Field(8 * 1024 * 1024, ge=1)
    api_body_limit_bytes: int = Field(1024 * 1024, ge=1)
    webhook_body_limit_bytes: int = Field(256 * 1024, ge=1)
    page_body_limit_bytes: int = Field(512 * 1024, ge=1)
    login_body_limit_bytes: int = Field(16 * 1024, ge=1)
    body_read_timeout_seconds: float = Field(30.0, gt=0)
    # Requests in flight per process (a stream counts until its end); past it, 503 with Retry-After.
    max_concurrent_requests: int = Field(1024, ge=1)
    # Callers' contexts kept in memory per process (services/context_cache.py; a few KB each, mostly the
    # org's key ciphertexts); 0 reads the context from the database on every call.
    context_cache_entries: int = Field(4096, ge=0)

"""Settings from the environment (ALUMIA_*), validated once at start."""

import hashlib
import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from alumia.domain.catalog import PROVIDER_NAMES
from alumia.domain.services_pricing import ServicePrices


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
        """Where each process journals the calls it meters (services/outbox.py), shared by the processes
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

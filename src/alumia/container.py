"""The app's dependency container: the database, vault, catalog, HTTP client and per-process services."""

from dataclasses import dataclass, field

import aiohttp
from starlette.requests import Request

from alumia.config import Settings
from alumia.domain.catalog import Catalog
from alumia.domain.pricing import FeePolicy
from alumia.providers.base import Adapter
from alumia.providers.embeddings import EmbeddingAdapter
from alumia.providers.registry import embedding_adapters_for
from alumia.redact import Redactors
from alumia.services.auto_topup import AutoTopUp
from alumia.services.background import Background
from alumia.services.chat_request import RequestLimits
from alumia.services.context_cache import ContextCache
from alumia.services.metering import Metering
from alumia.services.payments import StripeApi
from alumia.storage.db import Database
from alumia.storage.outbox import Outbox
from alumia.vault.runtime import Vault


@dataclass
class Services:
    """The app's dependency container: what the handlers and use cases need, wired once per app.

    Created in `create_app`'s lifespan and kept on `app.state.services`; `services_of` reads it, typed.
    """

    db: Database
    vault: Vault
    catalog: Catalog
    settings: Settings
    http: aiohttp.ClientSession
    adapters: dict[str, Adapter]
    background: Background = field(default_factory=Background)  # every task that outlives a request
    stripe: StripeApi | None = None  # None: Stripe is not configured (direct deposits, no auto top-up)
    outbox: Outbox | None = None  # journals each call before metering (storage/outbox.py)
    contexts: ContextCache | None = None  # callers' contexts from memory; None: read on every call
    redactors: Redactors = field(default_factory=Redactors)  # each key's KeyRedactor, built once
    embedders: dict[str, EmbeddingAdapter] = field(init=False)  # by provider: who has an embeddings API
    fee_policy: FeePolicy = field(init=False)
    request_limits: RequestLimits = field(init=False)
    metering: Metering = field(init=False)
    auto_topup: AutoTopUp = field(init=False)

    def __post_init__(self) -> None:
        self.embedders = embedding_adapters_for(self.catalog)
        self.fee_policy = FeePolicy(self.settings.fee_bps, self.settings.waiver_threshold_cents)
        self.request_limits = self.settings.request_limits
        self.auto_topup = AutoTopUp(self.db, self.settings, self.stripe, self.background)
        self.metering = Metering(self.db, self.outbox, self.background, self.auto_topup.after_charge)


def services_of(request: Request) -> Services:
    """The app's services, from a request (a page or a handler outside FastAPI's dependencies)."""
    services: Services = request.app.state.services
    return services

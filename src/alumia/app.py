"""create_app(settings): the one place where the pieces are wired."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from alumia.api import agents, api_keys, billing, spending, stripe_webhooks, usage_events
from alumia.api.envelope import error_response, install_error_handlers, rejecter
from alumia.config import Settings
from alumia.container import Services
from alumia.domain.catalog import load_catalog
from alumia.gateway.door import ModelCallDoor
from alumia.gateway.embeddings import embeddings
from alumia.gateway.embeddings import routes as embeddings_routes
from alumia.gateway.messages import count_tokens, messages
from alumia.gateway.messages import routes as messages_routes
from alumia.gateway.responses import create_response
from alumia.gateway.responses import routes as responses_routes
from alumia.gateway.routes import chat_completions, list_models
from alumia.gateway.routes import routes as gateway_routes
from alumia.http_limits import BodyLimits, HttpLimits
from alumia.logs import configure_logging
from alumia.providers.registry import adapters_for
from alumia.services.context_cache import ContextCache
from alumia.services.passwords import Passwords
from alumia.services.payments import StripeApi
from alumia.services.sign_in_guard import SignInGuard
from alumia.services.sweeper import recover, sweep_forever
from alumia.services.vault_admin import open_vault
from alumia.storage.db import Database
from alumia.storage.generation import open_reader
from alumia.storage.outbox import Outbox
from alumia.web import auth_pages
from alumia.web.headers import SecurityHeaders
from alumia.web.pages import page_routers
from alumia.web.session import NotSignedIn
from alumia.web.slashes import RelativeSlashRedirect
from alumia.web.templating import render_error

log = logging.getLogger("alumia.app")


def _http_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout_seconds, sock_connect=10)
    # Upstream SSE lines can be long (a whole tool-call argument in one chunk).
    return aiohttp.ClientSession(connector=connector, timeout=timeout, read_bufsize=2**20,
                                 auto_decompress=True, raise_for_status=False)


async def _to_login(request: Request, _exc: NotSignedIn) -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


class AlumiaApp(FastAPI):
    """FastAPI behind `front`: limits, security headers and the model calls' door (gateway/door.py)."""

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """HTTP requests enter through `front`; the lifespan goes straight to FastAPI."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # what Request.app reads, on either door
        await self.front(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The framework's own handling: routing, dependencies, exception handlers."""
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    """The whole service: gateway, management API and health, over one database and vault."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.resolved_database_url)
        vault = await open_vault(db, settings)
        http = _http_session(settings)
        catalog = load_catalog()
        outbox = Outbox.open(settings.outbox_dir)
        try:
            # Before serving: calls that processes killed mid-metering had answered are charged now,
            # while their holds are still open (the sweeper repeats this before expiring holds).
            await recover(db, outbox.directory, skip_owner=outbox.owner)
        except Exception:  # the database may be down; the sweeper retries, so start anyway
            log.exception("outbox recovery at start failed")
        reader = open_reader(settings.resolved_database_url) if settings.context_cache_entries else None
        contexts = ContextCache(reader, settings.context_cache_entries) if reader else None
        stripe_api = StripeApi.open(settings)
        services = app.state.services = Services(
            db=db, vault=vault, catalog=catalog, settings=settings, http=http, adapters=adapters_for(catalog),
            outbox=outbox, contexts=contexts, stripe=stripe_api)
        app.state.passwords = Passwords(settings.password_hash_concurrency)
        app.state.sign_in_guard = SignInGuard.from_settings(settings)
        services.background.spawn(
            sweep_forever(db, settings.hold_sweep_seconds, outbox, settings.responses_retention_days),
            "the hold sweeper", forever=True)
        try:
            yield
        finally:
            await services.background.drain()  # the sweeper stops; every metering task finishes
            if stripe_api is not None:
                await stripe_api.close()
            outbox.close()  # after the last metering; what did not commit stays for recovery
            app.state.passwords.close()
            await http.close()
            if contexts is not None:
                await contexts.close()
            await db.dispose()

    app = AlumiaApp(title="Alumia gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                    redirect_slashes=False)
    app.add_middleware(RelativeSlashRedirect, router=app.router)
    install_error_handlers(app, render_error)
    limits = BodyLimits(gateway=settings.gateway_body_limit_bytes, api=settings.api_body_limit_bytes,
                        webhook=settings.webhook_body_limit_bytes, page=settings.page_body_limit_bytes,
                        login=settings.login_body_limit_bytes,
                        read_timeout_seconds=settings.body_read_timeout_seconds)
    model_calls = {("POST", "/v1/chat/completions"): chat_completions, ("GET", "/v1/models"): list_models,
                   ("POST", "/v1/messages"): messages, ("POST", "/v1/embeddings"): embeddings,
                   ("POST", "/v1/messages/count_tokens"): count_tokens,
                   ("POST", "/v1/responses"): create_response}
    door = ModelCallDoor(model_calls, framework=app.framework,
                         render_error=lambda request, error: error_response(request, error, render_error))
    # Every request, through either door, is bounded and carries the security headers.
    app.front = HttpLimits(SecurityHeaders(door), limits=limits,
                           max_concurrent=settings.max_concurrent_requests, reject=rejecter(render_error))
    app.add_exception_handler(NotSignedIn, _to_login)  # type: ignore[arg-type]
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "web" / "static")), name="static")
    app.include_router(billing.router)
    app.include_router(usage_events.router)
    app.include_router(spending.router)
    app.include_router(stripe_webhooks.router)
    app.include_router(api_keys.router)
    app.include_router(agents.router)
    for route in [*gateway_routes, *messages_routes, *embeddings_routes, *responses_routes]:
        app.router.routes.append(route)
    app.include_router(auth_pages.router)
    for router in page_routers:
        app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        """200 once the lifespan has opened the database and the vault."""
        return JSONResponse({"status": "ok"})

    return app


def create_app_from_env() -> FastAPI:
    """The factory uvicorn imports in each worker process."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)

"""One gateway call: route it, check the balance, send it upstream, meter it.

The path reads who is calling from the process's context cache (one generation read shared by the
calls of the moment), decrypts a key at most once per key record per process (then a memory cache),
makes the upstream round trip, and writes at most twice — the hold before, the settlement after —
each as one operation of the process's group commit, committed before the response's last byte
(docs/hot-path.md).
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import NoReturn, Protocol, TypeVar

import aiohttp

from alumia.clock import utcnow
from alumia.container import Services
from alumia.domain.api_keys import key_refusal
from alumia.domain.call_record import Api
from alumia.domain.catalog import Model, Provider
from alumia.domain.estimate import estimate_input, estimate_usage
from alumia.domain.routing import NoPlatformKey, Route, RouteDecision, decide_route
from alumia.domain.tariff import Tariff
from alumia.domain.usage import TokenUsage
from alumia.errors import AppError, ErrorCode
from alumia.providers.base import Adapter, ChatRequest, UpstreamError, UpstreamRequest
from alumia.providers.features import check_features
from alumia.providers.openai_answer import answer_text_bytes, cut_answer
from alumia.redact import KeyInAnswer, KeyRedactor, redact
from alumia.services.call import Call, CallOutcome, R, unavailable
from alumia.services.chat_request import parse_chat_request
from alumia.services.context_cache import CacheKey
from alumia.services.provider_key import provider_key
from alumia.services.streaming import RESERVATION_REACHED, relay_stream
from alumia.services.sweeper import HOLD_GRACE_SECONDS, release_hold
from alumia.services.upstream_body import read_capped, read_error_body
from alumia.storage.call_writes import Reserve, Reserved
from alumia.storage.db import DATABASE_DOWN
from alumia.storage.gateway import ActiveKey, CallContext, call_context, org_call_context
from alumia.storage.generation import GenerationUnavailable

log = logging.getLogger("alumia.gateway")
# What stops the caller's context from being read: the database, or the cache generation it keeps.
_UNREADABLE: tuple[type[BaseException], ...] = (*DATABASE_DOWN, GenerationUnavailable)



def upstream_failure(err: UpstreamError, decision: RouteDecision, org_slug: str, key: str) -> AppError:
    """The caller's error for a provider's error (docs/behaviour.md "Services errors").

    A BYOK key the provider rejects is reported as such and never retried on the platform account;
    the platform's own account failing (bad key, no funds) is the operator's problem, not the org's.
    """
    provider, status, byok = err.provider, err.status, decision.route is Route.BYOK
    message = redact(err.message, key)
    billing = f"Billing: /{org_slug}/billing"
    if status in (401, 403):
        if byok:
            return AppError(ErrorCode.BYOK_KEY_REJECTED,
                            f"{provider} rejected your org's BYOK key (HTTP {status}: {message}). The call "
                            f"was not retried on the platform account. Replace or deactivate the key in "
                            f"{billing}", status=status)
        log.error("platform key for %s rejected upstream: HTTP %s", provider, status)
        return AppError(ErrorCode.UPSTREAM_AUTH_FAILED, f"the platform's {provider} account could not "
                        f"authenticate; try again later or add a BYOK key for {provider} in {billing}",
                        status=502)
    if status == 402:
        if byok:
            return AppError(ErrorCode.PROVIDER_BILLING_ERROR,
                            f"your {provider} account cannot pay for this call: {message}. Top it up with "
                            f"{provider}, or deactivate the BYOK key in {billing}", status=402)
        log.error("platform account for %s cannot pay: %s", provider, message)
        return AppError(ErrorCode.SERVICE_UNAVAILABLE, f"the platform's {provider} account is unavailable; "
                        f"try again later or add a BYOK key for {provider} in {billing}")
    if status == 429:
        return AppError(ErrorCode.TOO_MANY_REQUESTS, f"{provider} is rate limiting: {message}",
                        headers={"Retry-After": err.retry_after or "1"})
    if status == 404:
        return AppError(ErrorCode.UPSTREAM_NOT_FOUND,
                        f"{provider} does not know this model: {message}", status=404)
    if status == 413:
        return AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"{provider} says the request is too large: {message}")
    if 400 <= status < 500:
        return AppError(ErrorCode.UPSTREAM_BAD_REQUEST,
                        f"{provider} refused the request: {message}", status=status)
    if status in (503, 529):
        return AppError(ErrorCode.UPSTREAM_OVERLOADED, f"{provider} is overloaded: {message}", status=503,
                        headers={"Retry-After": err.retry_after} if err.retry_after else None)
    if status == 504:
        return AppError(ErrorCode.GATEWAY_TIMEOUT, f"{provider} timed out: {message}")
    return AppError(ErrorCode.UPSTREAM_ERROR, f"{provider} failed (HTTP {status}): {message}", status=502)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a call: an API key (`bearer`), or a signed-in member's org (`org_id`, the lab).

    `agent` (an agent's id or slug, from X-Alumia-Agent or the lab) attributes the call to that agent.
    """

    bearer: str | None = None
    org_id: str | None = None
    agent: str | None = None


async def admit(gw: Services, caller: Caller) -> CallContext:
    """Who is calling, their balance and their org's active keys, or the error that stops the call.

    It needs only the headers, so a caller is authenticated before its body is read. The context comes
    from the process's cache when the cache generation says nothing it depends on has changed since it
    was read (then its balance fields are as of that read; see CallContext).
    """
    production = gw.settings.is_production
    if caller.org_id is None and (refusal := key_refusal(caller.bearer, production=production)):
        raise AppError(ErrorCode.UNAUTHORIZED, refusal)
    if caller.org_id is not None:
        org_id = caller.org_id
        key: CacheKey = ("org", org_id, caller.agent)

        async def load() -> CallContext | None:
            async with gw.db.lookup() as conn:
                return await org_call_context(conn, org_id, caller.agent)
    else:
        key_hash = hashlib.sha256((caller.bearer or "").encode()).hexdigest()
        key = ("key", key_hash, caller.agent)

        async def load() -> CallContext | None:
            async with gw.db.lookup() as conn:
                return await call_context(conn, key_hash, caller.agent)
    try:
        # From memory when nothing it depends on changed since (services/context_cache.py); the checks
        # below apply to a remembered context exactly as to a fresh one.
        ctx = await (gw.contexts.context(key, load) if gw.contexts is not None else load())
    except _UNREADABLE as exc:
        log.error("database unreachable while admitting a call: %s", type(exc).__name__)
        raise unavailable("check your API key") from None
    if ctx is None:
        raise AppError(ErrorCode.UNAUTHORIZED, "this API key is not valid or has been revoked")
    if "gateway" not in ctx.scopes.split():
        raise AppError(ErrorCode.FORBIDDEN, "this API key may not call models")
    if caller.agent and ctx.agent_id is None:
        raise AppError(ErrorCode.NOT_FOUND, "X-Alumia-Agent names no agent of this org")
    if caller.agent and not ctx.agent_active:
        raise AppError(ErrorCode.CONFLICT, "this agent is inactive; activate it on its agent page first")
    return ctx


def _resolve(gw: Services, raw: bytes) -> tuple[ChatRequest, Model, Provider, Adapter]:
    """Parse the request and find its model, provider and adapter; nothing here echoes the input."""
    request = parse_chat_request(raw, gw.request_limits)
    model = gw.catalog.model(request.model)
    if model is None:
        raise AppError(ErrorCode.NOT_FOUND, "the requested model is not in the catalog; see GET /v1/models")
    if model.kind != "chat":
        raise AppError(ErrorCode.BAD_REQUEST,
                       f"{model.id} is an embedding model, not a chat model: call it on "
                       "/v1/embeddings; GET /v1/models lists each model's kind")
    if model.id != request.model:  # a provider/model alias: the provider is sent its own id
        request = replace(request, model=model.id, body={**request.body, "model": model.id})
    provider = gw.catalog.provider_of(model)
    return request, model, provider, gw.adapters[provider.name]


async def chat_completion(gw: Services, caller: Caller, raw: bytes, request_id: str) -> CallOutcome:
    """Admit and complete one call whose body is already in hand (the lab)."""
    started = time.perf_counter()
    return await complete(gw, await admit(gw, caller), raw, request_id, started)


async def complete(gw: Services, ctx: CallContext, raw: bytes, request_id: str, started: float,
                   adapt: Callable[[Provider, Adapter], Adapter] | None = None,
                   api: Api = Api.CHAT) -> CallOutcome:
    """Handle one admitted chat completion (POST /v1/chat/completions, /v1/messages, /v1/responses, the
    lab); `api` is the door it came through, for its usage record.

    `adapt` lets a door speak to the provider its own way (the Anthropic door sends Claude its
    Messages body as it came): it gets the provider and its adapter, and returns the one to use.
    """
    request, model, provider, adapter = _resolve(gw, raw)
    if adapt is not None:
        adapter = adapt(provider, adapter)
    # Every optional feature the request uses reaches the provider, or the call is refused here.
    check_features(request, provider, request.max_output_tokens or model.max_output_tokens)
    byok = ctx.key_for(provider.name)
    decision = route_of(gw, ctx, provider, byok)
    tariff = Tariff(model.prices, gw.fee_policy, ctx.cumulative_deposits_cents,
                    pays=decision.route is Route.PLATFORM)
    call = Call(ctx, model, provider, decision, request, request_id, started, tariff, gw.metering,
                byok if decision.route is Route.BYOK else None, api)
    relay: Relay | None = None
    if request.stream:
        def relay(response: aiohttp.ClientResponse, redactor: KeyRedactor) -> AsyncIterator[bytes]:
            return relay_stream(call, adapter, response, redactor)
    try:
        return await send(gw, call, adapter, raw, _fit_answer, relay)
    except AppError as error:
        error.headers.setdefault("X-Alumia-Route", decision.route.value)
        raise


def route_of(gw: Services, ctx: CallContext, provider: Provider, byok: ActiveKey | None) -> RouteDecision:
    """Whose key pays for a call to `provider` (domain/routing), or 503 when no key can."""
    try:
        return decide_route(provider, byok.id if byok else None, provider.name in gw.settings.platform_keys)
    except NoPlatformKey as exc:
        raise AppError(ErrorCode.SERVICE_UNAVAILABLE,
                       f"no platform key is configured for {exc.provider}; add a BYOK key for "
                       f"{exc.provider} in Billing: /{ctx.org_slug}/billing") from exc


async def _reserve(gw: Services, call: Call[R], raw: bytes) -> None:
    """Set the call's worst case aside, or refuse it with 402 before anything is sent upstream.

    The worst case covers every choice asked for (`n` completions of up to the limit each). The
    reservation's conditional update is the whole decision (it holds under any concurrency, in any
    number of processes); the caller's context may be cached, so its balance is not consulted. The
    write is one operation of the process's group commit (storage/call_writes.py).
    """
    ctx = call.ctx
    worst = call.tariff.worst_case(len(raw), call.output_limit * call.request.choices)
    now = utcnow()
    expires = now + timedelta(seconds=gw.settings.upstream_timeout_seconds + HOLD_GRACE_SECONDS)
    writing = asyncio.ensure_future(gw.db.calls.reserve(Reserve(
        hold_id=call.request_id, org_id=ctx.org_id, amount=worst, now=now, expires_at=expires)))
    try:
        reserved = await asyncio.shield(writing)
    except asyncio.CancelledError:
        # The client left while the reservation was being written: free it once it is in.
        writing.add_done_callback(lambda done: _release_orphan(gw, call.request_id, done))
        raise
    except DATABASE_DOWN as exc:
        # Should the hold have been written after all, the sweeper expires it: nothing is charged.
        log.error("database unreachable while reserving for call %s: %s", call.request_id,
                  type(exc).__name__)
        raise unavailable("reserve this call's cost") from None
    if not reserved.admitted:
        raise AppError(ErrorCode.PAYMENT_REQUIRED,
                       f"Org balance is insufficient to run a paid model: this call may cost up to "
                       f"{worst} microcents and {max(reserved.available, 0)} are available. Deposit in "
                       f"Billing or add a BYOK key for {call.provider.name}.")
    call.hold = worst


def _release_orphan(gw: Services, hold_id: str, done: "asyncio.Future[Reserved]") -> None:
    """Release a hold whose reservation committed after its caller had gone."""
    if done.cancelled() or done.exception() is not None or not done.result().admitted:
        return
    gw.background.spawn(release_hold(gw.db, hold_id), f"releasing the orphaned hold {hold_id}")


def _key_for(gw: Services, call: Call[R]) -> str:
    """The provider key that pays: the org's (decrypted once, then cached) or the platform's."""
    return provider_key(gw, call.ctx, call.provider.name, call.byok)


# How an answer is fitted to its call: the body to deliver, its usage, status and whether the usage is
# estimated (`_fit_answer` for chat completions; services/embeddings.py for embeddings).
Fit = Callable[[Call[R], bytes, TokenUsage | None], tuple[bytes, TokenUsage, str, bool]]
# A streamed answer's relay (services/streaming.py), given the upstream response and the key's redactor.
Relay = Callable[[aiohttp.ClientResponse, KeyRedactor], AsyncIterator[bytes]]
Q = TypeVar("Q", contravariant=True)


class Speaks(Protocol[Q]):
    """What the call path asks of an adapter for requests of type Q (chat or embeddings)."""

    def build(self, base_url: str, request: Q, key: str, max_output_tokens: int) -> UpstreamRequest:
        """The upstream request."""
        ...

    def parse_response(self, body: bytes, request: Q) -> tuple[bytes, TokenUsage | None]:
        """The answer to send back, and the usage it reports."""
        ...

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """An upstream error response as an UpstreamError."""
        ...


def parse_answer(adapter: Speaks[R], provider: str, body: bytes,
                 request: R) -> tuple[bytes, TokenUsage | None]:
    """The adapter's reading of a 200 answer; a body it cannot read is the provider's error (502)."""
    try:
        return adapter.parse_response(body, request)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # orjson's errors are ValueErrors
        raise UpstreamError(provider=provider, status=502, code="malformed_response",
                            message="the provider's response could not be read") from exc


async def send(gw: Services, call: Call[R], adapter: Speaks[R], raw: bytes, fit: Fit[R],
               relay: Relay | None = None) -> CallOutcome:
    """Reserve, send upstream, and meter the answer (or hand back a stream that meters itself).

    Chat completions and embeddings take this one path: only the adapter and `fit` differ.
    """
    if call.decision.route is Route.PLATFORM:
        await _reserve(gw, call, raw)
    try:
        return await _exchange(gw, call, adapter, fit, relay)
    except BaseException:
        if call.hold and not call.metered:
            try:
                await asyncio.shield(release_hold(gw.db, call.request_id))
            except DATABASE_DOWN as exc:  # the sweeper expires it; nothing was charged
                log.error("could not release the hold of call %s: %s", call.request_id, type(exc).__name__)
        raise


async def _post(http: aiohttp.ClientSession, url: str, body: bytes,
                headers: dict[str, str]) -> aiohttp.ClientResponse:
    """POST upstream, once more if the connection dropped before any answer came back.

    A server closes an idle kept-alive connection whenever its own timeout says so; when that lands
    just as we reuse the connection, the request fails with nothing answered. aiohttp retries that
    only for idempotent methods; the providers' own SDKs retry it for their POSTs, and so do we, once.
    A failure to connect at all is not retried: nothing was sent, and trying again at once won't help.
    """
    try:
        return await http.post(url, data=body, headers=headers, allow_redirects=False)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise
        log.info("upstream connection dropped before an answer (%s); sending once more", type(exc).__name__)
        return await http.post(url, data=body, headers=headers, allow_redirects=False)


async def _exchange(gw: Services, call: Call[R], adapter: Speaks[R], fit: Fit[R],
                    relay: Relay | None) -> CallOutcome:
    """Send the call upstream and read the answer.

    Redirects are never followed: the request carries a key, and a 3xx is the provider's error. Bodies
    are read with caps, so no upstream can make the gateway buffer without bound.
    """
    key = _key_for(gw, call)
    provider, request, decision, settings = call.provider, call.request, call.decision, gw.settings
    base_url = settings.base_urls.get(provider.name, provider.base_url)
    upstream = adapter.build(base_url, request, key, call.output_limit)
    try:
        response = await _post(gw.http, upstream.url, upstream.body, upstream.headers)
    except TimeoutError as exc:
        await call.meter(TokenUsage(), "error", 504, "UPSTREAM_TIMEOUT")
        raise AppError(ErrorCode.GATEWAY_TIMEOUT, f"{provider.name} did not answer in time") from exc
    except aiohttp.ClientError as exc:
        await call.meter(TokenUsage(), "error", 502, "UPSTREAM_UNREACHABLE")
        raise AppError(ErrorCode.BAD_GATEWAY, f"{provider.name} could not be reached") from exc

    if response.status >= 300:
        await _fail(call, adapter, response, key)
    if relay is not None:
        return CallOutcome(route=decision.route, status=200,
                           stream=relay(response, gw.redactors.for_key(key)))
    try:
        body = await read_capped(response, settings.max_upstream_body_bytes)
    except (aiohttp.ClientError, TimeoutError) as exc:
        await call.meter(TokenUsage(), "error", 502, "UPSTREAM_CUT")
        raise AppError(ErrorCode.BAD_GATEWAY, f"{provider.name} stopped sending its answer") from exc
    finally:
        response.release()
    if body is None:
        await call.meter(TokenUsage(), "error", 502, "UPSTREAM_TOO_LARGE")
        raise AppError(ErrorCode.BAD_GATEWAY, f"{provider.name} sent an answer over the gateway's limit of "
                       f"{settings.max_upstream_body_bytes} bytes")
    try:
        out, reported = parse_answer(adapter, provider.name, body, request)
    except UpstreamError as err:  # an error inside a 200, or a body we cannot read
        failure = upstream_failure(err, decision, call.ctx.org_slug, key)
        await call.meter(TokenUsage(), "error", failure.status, failure.code)
        raise failure from None
    try:
        out = gw.redactors.for_key(key).answer(out)
    except KeyInAnswer:
        log.error("call %s: %s's answer contained part of the key; withheld", call.request_id, provider.name)
        await call.meter(TokenUsage(), "error", 502, "KEY_IN_ANSWER")
        raise AppError(ErrorCode.BAD_GATEWAY,
                       f"{provider.name}'s answer was withheld because it contained part of "
                       "the key it was sent") from None
    out, usage, status, estimated = fit(call, out, reported)
    await call.meter(usage, status, usage_estimated=estimated)
    return CallOutcome(route=decision.route, status=200, body=out)


async def _fail(call: Call[R], adapter: Speaks[R], response: aiohttp.ClientResponse,
                key: str) -> NoReturn:
    """Meter and raise the caller's error for an upstream error or redirect (its body read capped)."""
    provider = call.provider.name
    try:
        body = await read_error_body(response)
    finally:
        response.release()
    if response.status < 400:
        err = UpstreamError(provider=provider, status=502, code="redirect",
                            message=f"answered with a redirect (HTTP {response.status}), which the gateway "
                                    "does not follow with a key")
    else:
        err = adapter.parse_error(provider, response.status, body, response.headers)
    failure = upstream_failure(err, call.decision, call.ctx.org_slug, key)
    await call.meter(TokenUsage(), "error", failure.status, failure.code)
    raise failure


def _fit_answer(call: Call[ChatRequest], out: bytes,
                reported: TokenUsage | None) -> tuple[bytes, TokenUsage, str, bool]:
    """The answer to deliver, its usage, status and whether usage is estimated.

    Without (complete) usage from the provider the tokens are estimated from the request and the
    answer's text. A platform answer whose cost passes its hold (a provider that ignored the limit) is
    cut to what the hold pays for and billed as such: a call never delivers more than it reserved.
    """
    estimated = reported is None
    usage = reported or estimate_usage(answer_text_bytes(out), None,
                                       input_tokens=estimate_input(call.request.body.get("messages") or []))
    if not call.hold or call.tariff.fits(usage, call.hold):
        return out, usage, "ok", estimated
    affordable = call.tariff.affordable_output(usage, call.hold)
    log.warning("call %s answered %s output tokens; its hold of %s microcents pays for %s; cutting it",
                call.request_id, usage.output_tokens, call.hold, affordable)
    share = affordable / usage.output_tokens if usage.output_tokens else 0.0
    cut = cut_answer(out, int(answer_text_bytes(out) * share))
    return cut, replace(usage, output_tokens=affordable), RESERVATION_REACHED, True

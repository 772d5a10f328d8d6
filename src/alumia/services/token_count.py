"""Counting a Messages request's input tokens (POST /v1/messages/count_tokens), free of charge.

For an Anthropic-format model the count is Anthropic's own, asked with the key the route decision
picks (the org's BYOK key, else the platform's: the same decision a call makes, and equally never a
silent fallback). Anthropic does not charge for counting, so nothing is held, charged or recorded.
For any other model there is no such endpoint to ask, and the count is the gateway's estimate
(domain/estimate.py: the messages' text, plus the tools' JSON), which the answer says it is.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from alumia.container import Services
from alumia.domain.catalog import Provider
from alumia.domain.estimate import estimate_input, text_tokens
from alumia.domain.routing import NoPlatformKey, Route, decide_route
from alumia.errors import AppError, ErrorCode
from alumia.providers.anthropic_native import count_tokens_request, counted_tokens
from alumia.providers.base import UpstreamError
from alumia.services.provider_key import provider_key
from alumia.services.proxy import upstream_failure
from alumia.services.upstream_body import read_capped, read_error_body
from alumia.storage.gateway import CallContext

log = logging.getLogger("alumia.gateway")

PROVIDER = "provider"
ESTIMATE = "estimate"
COUNT_BODY_BYTES = 64 * 1024  # `{"input_tokens": N}`: anything longer is not a count


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A count and where it came from: the provider's (`provider`) or the gateway's (`estimate`)."""

    input_tokens: int
    source: str
    route: Route | None = None  # whose key asked the provider; None for an estimate


def estimate_count(view: Mapping[str, Any]) -> int:
    """The gateway's estimate for a request's OpenAI view: its messages, plus its tools' JSON."""
    tools = view.get("tools")
    return estimate_input(view.get("messages") or []) + (text_tokens(orjson.dumps(tools).decode())
                                                         if tools else 0)


async def count_tokens(gw: Services, ctx: CallContext, body: Mapping[str, Any],
                       view: Mapping[str, Any]) -> TokenCount:
    """Count a checked request (`body`, and `view`, its OpenAI view from the Anthropic door)."""
    model = gw.catalog.model(view["model"])
    if model is None:
        raise AppError(ErrorCode.NOT_FOUND, "the requested model is not in the catalog; see GET /v1/models")
    provider = gw.catalog.provider_of(model)
    if provider.wire_format != "anthropic":
        return TokenCount(estimate_count(view), ESTIMATE)
    byok = ctx.key_for(provider.name)
    try:
        decision = decide_route(provider, byok.id if byok else None,
                                provider.name in gw.settings.platform_keys)
    except NoPlatformKey as exc:
        raise AppError(ErrorCode.SERVICE_UNAVAILABLE,
                       f"no platform key is configured for {exc.provider}; add a BYOK key for "
                       f"{exc.provider} in Billing: /{ctx.org_slug}/billing") from exc
    key = provider_key(gw, ctx, provider.name, byok if decision.route is Route.BYOK else None)
    try:
        count = await _ask(gw, provider, body, model.id, key)
    except UpstreamError as err:
        raise upstream_failure(err, decision, ctx.org_slug, key) from None
    return TokenCount(count, PROVIDER, decision.route)


async def _ask(gw: Services, provider: Provider, body: Mapping[str, Any], model: str, key: str) -> int:
    """Anthropic's count; UpstreamError for its error (or an answer that is not a count)."""
    base_url = gw.settings.base_urls.get(provider.name, provider.base_url)
    upstream = count_tokens_request(base_url, body, model, key)
    try:
        # Never follows a redirect: the request carries a key.
        response = await gw.http.post(upstream.url, data=upstream.body, headers=upstream.headers,
                                      allow_redirects=False)
    except TimeoutError as exc:
        raise AppError(ErrorCode.GATEWAY_TIMEOUT, f"{provider.name} did not answer in time") from exc
    except aiohttp.ClientError as exc:
        raise AppError(ErrorCode.BAD_GATEWAY, f"{provider.name} could not be reached") from exc
    try:
        if response.status >= 300:
            error_body = await read_error_body(response)
            if response.status < 400:
                raise UpstreamError(provider=provider.name, status=502, code="redirect",
                                    message=f"answered with a redirect (HTTP {response.status})")
            adapter = gw.adapters[provider.name]
            raise adapter.parse_error(provider.name, response.status, error_body, response.headers)
        answer = await read_capped(response, COUNT_BODY_BYTES)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AppError(ErrorCode.BAD_GATEWAY, f"{provider.name} stopped sending its answer") from exc
    finally:
        response.release()
    try:
        return counted_tokens(answer or b"")
    except ValueError:
        raise UpstreamError(provider=provider.name, status=502, code="malformed_response",
                            message="the provider's count could not be read") from None

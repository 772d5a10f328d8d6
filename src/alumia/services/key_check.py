"""Asking a provider whether a key works, before it is stored (docs/behaviour.md "Key check on add")."""

import logging
from dataclasses import dataclass

import aiohttp

from alumia.providers.base import Adapter
from alumia.redact import redact
from alumia.services.upstream_body import read_error_body

log = logging.getLogger("alumia.key_check")


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """What the provider said: verified, rejected (401), restricted (403) or unverified (no answer)."""

    verification: str
    status: int | None = None
    message: str = ""


async def check_key(http: aiohttp.ClientSession, adapter: Adapter, provider: str, base_url: str,
                    key: str, timeout_seconds: float) -> KeyCheck:
    """The provider's verdict on a key, asked with a short timeout; never raises for the provider's sake."""
    request = adapter.key_check(base_url, key)
    method = "POST" if request.body else "GET"
    try:
        # Never follow a redirect: it would carry the key to wherever the provider's answer points.
        async with http.request(method, request.url, headers=request.headers, data=request.body or None,
                                allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as response:
            if 300 <= response.status < 400:
                log.warning("key check for %s answered a redirect (HTTP %s), not followed; storing the key "
                            "unverified", provider, response.status)
                return KeyCheck("unverified", response.status, "the provider answered with a redirect")
            if response.status < 400:
                return KeyCheck("verified", response.status)
            body = await read_error_body(response)
            error = adapter.parse_error(provider, response.status, body, response.headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("key check for %s could not reach the provider: %s", provider, type(exc).__name__)
        return KeyCheck("unverified")
    message = redact(error.message, key)
    if error.status == 401:
        return KeyCheck("rejected", error.status, message)
    if error.status == 403:
        return KeyCheck("restricted", error.status, message)
    log.warning("key check for %s answered HTTP %s; storing the key unverified", provider, error.status)
    return KeyCheck("unverified", error.status, message)

"""Whose key pays for a call: the route decision, a pure function of its inputs."""

from dataclasses import dataclass
from enum import StrEnum

from alumia.domain.catalog import Provider


class Route(StrEnum):
    """How a call is paid for."""

    BYOK = "byok"
    PLATFORM = "platform"
    FREE = "free"


class NoPlatformKey(Exception):
    """The org has no BYOK key for the provider and the platform has no key configured for it."""

    def __init__(self, provider: str) -> None:
        super().__init__(provider)
        self.provider = provider


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The route and, for byok, which stored key record pays."""

    route: Route
    byok_key_id: str | None = None


def decide_route(provider: Provider, active_byok_key_id: str | None,
                 platform_key_configured: bool) -> RouteDecision:
    """BYOK matches by provider: an active key wins, even for a free provider (the call counts as BYOK).

    Without one, the call goes through the platform's own account: metered for a paid provider, free
    for a zero-cost one (the org needs no key; the platform's key still authenticates upstream).
    """
    if active_byok_key_id is not None:
        return RouteDecision(Route.BYOK, active_byok_key_id)
    if not platform_key_configured:
        raise NoPlatformKey(provider.name)
    return RouteDecision(Route.FREE if provider.free else Route.PLATFORM)

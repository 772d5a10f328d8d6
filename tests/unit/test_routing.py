"""The route decision: BYOK by provider, free for zero-cost providers, platform otherwise."""

import pytest

from alumia.domain.catalog import load_catalog
from alumia.domain.routing import NoPlatformKey, Route, RouteDecision, decide_route

CATALOG = load_catalog()
ANTHROPIC = CATALOG.providers["anthropic"]
GROQ = CATALOG.providers["groq"]


def test_an_active_byok_key_wins_whatever_else_is_configured() -> None:
    decision = decide_route(ANTHROPIC, "key-1", platform_key_configured=True)
    assert decision == RouteDecision(Route.BYOK, "key-1")
    assert decide_route(ANTHROPIC, "key-1", platform_key_configured=False).route is Route.BYOK


def test_a_byok_key_for_a_free_provider_is_used_and_counts_as_byok() -> None:
    assert decide_route(GROQ, "key-2", platform_key_configured=True) == RouteDecision(Route.BYOK, "key-2")


def test_without_a_key_a_paid_provider_goes_through_the_platform() -> None:
    assert decide_route(ANTHROPIC, None, platform_key_configured=True) == RouteDecision(Route.PLATFORM)


def test_without_a_key_a_free_provider_is_free() -> None:
    assert decide_route(GROQ, None, platform_key_configured=True) == RouteDecision(Route.FREE)


def test_no_key_anywhere_names_the_provider() -> None:
    with pytest.raises(NoPlatformKey) as info:
        decide_route(ANTHROPIC, None, platform_key_configured=False)
    assert info.value.provider == "anthropic"

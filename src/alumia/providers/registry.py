"""Which adapter speaks for which provider."""

from alumia.domain.catalog import Catalog
from alumia.providers.anthropic import AnthropicAdapter
from alumia.providers.base import Adapter
from alumia.providers.gemini import GeminiAdapter
from alumia.providers.openai_compat import OpenAICompatAdapter


def adapter_for(name: str, wire_format: str) -> Adapter:
    """The adapter that speaks a provider's wire format."""
    if wire_format == "anthropic":
        return AnthropicAdapter()
    if wire_format == "gemini":
        return GeminiAdapter()
    return OpenAICompatAdapter(name)


def adapters_for(catalog: Catalog) -> dict[str, Adapter]:
    """An adapter for every provider of the catalog, keyed by provider name."""
    return {name: adapter_for(name, p.wire_format) for name, p in catalog.providers.items()}

"""Which adapter speaks for which provider."""

from alumia.domain.catalog import Catalog
from alumia.providers.base import Adapter
from alumia.providers.openai_compat import OpenAICompatAdapter


def adapters_for(catalog: Catalog) -> dict[str, Adapter]:
    """An adapter per provider whose wire format the gateway speaks, keyed by provider name."""
    adapters: dict[str, Adapter] = {}
    for name, provider in catalog.providers.items():
        if provider.wire_format == "openai":
            adapters[name] = OpenAICompatAdapter(name)
    return adapters

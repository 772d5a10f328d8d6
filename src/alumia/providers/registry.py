"""Which adapter speaks for which provider."""

from alumia.domain.catalog import Catalog, Provider
from alumia.providers.anthropic import AnthropicAdapter
from alumia.providers.base import Adapter
from alumia.providers.embeddings import EmbeddingAdapter, OpenAIEmbeddings
from alumia.providers.gemini import GeminiAdapter
from alumia.providers.gemini_embeddings import GeminiEmbeddings
from alumia.providers.openai_compat import OpenAICompatAdapter


def adapter_for(provider: Provider) -> Adapter:
    """The adapter that speaks a provider's wire format, told the provider's limit field and `n`."""
    if provider.wire_format == "anthropic":
        return AnthropicAdapter()
    if provider.wire_format == "gemini":
        return GeminiAdapter()
    assert provider.limit_field is not None  # load_catalog requires one for the OpenAI format
    return OpenAICompatAdapter(provider.name, provider.limit_field, provider.supports_n)


def adapters_for(catalog: Catalog) -> dict[str, Adapter]:
    """An adapter for every provider of the catalog, keyed by provider name."""
    return {name: adapter_for(p) for name, p in catalog.providers.items()}


def embedding_adapters_for(catalog: Catalog) -> dict[str, EmbeddingAdapter]:
    """An embeddings adapter for every provider with an embedding model in the catalog.

    OpenAI-format providers speak `/embeddings`, Gemini `batchEmbedContents`; Anthropic has no
    embeddings API, and the catalog refuses an embedding model of a provider without an adapter here.
    """
    providers = {m.provider for m in catalog.models.values() if m.kind == "embedding"}
    adapters: dict[str, EmbeddingAdapter] = {}
    for name in sorted(providers):
        provider = catalog.providers[name]
        if provider.wire_format == "openai":
            adapters[name] = OpenAIEmbeddings(name, provider.embeddings_base64)
        elif provider.wire_format == "gemini":
            adapters[name] = GeminiEmbeddings()
        else:
            raise ValueError(f"provider {name} has embedding models but no embeddings API adapter")
    return adapters

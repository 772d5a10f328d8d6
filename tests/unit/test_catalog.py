"""The catalog's model lookup: catalog ids, and `provider/id` aliases under the model's own provider."""

from decimal import Decimal

import pytest

from alumia.domain.catalog import load_catalog, model_from_toml

CATALOG = load_catalog()


@pytest.mark.parametrize(("asked", "found"), [
    ("gpt-5.6-luna", "gpt-5.6-luna"),
    ("openai/gpt-5.6-luna", "gpt-5.6-luna"),
    ("meta/llama-3.3-70b-instruct", "meta/llama-3.3-70b-instruct"),
    ("nvidia/meta/llama-3.3-70b-instruct", "meta/llama-3.3-70b-instruct"),
    ("openai/gpt-oss-20b", "openai/gpt-oss-20b"),  # a catalog id wins over the alias reading
])
def test_a_model_is_found_by_its_id_or_its_provider_alias(asked: str, found: str) -> None:
    model = CATALOG.model(asked)
    assert model is not None and model.id == found


@pytest.mark.parametrize("asked", ["groq/gpt-5.6-luna", "openai/", "/gpt-5.6-luna", "openai//gpt-5.6-luna",
                                   "OpenAI/gpt-5.6-luna", "openai/gpt-5.6-luna/", ""])
def test_anything_else_is_unknown(asked: str) -> None:
    assert CATALOG.model(asked) is None


def test_embedding_models_are_listed_with_their_kind_price_and_vector_sizes() -> None:
    small = CATALOG.model("openai/text-embedding-3-small")
    assert small is not None and small.kind == "embedding" and small.embedding is not None
    assert (small.prices.input, small.prices.output) == (Decimal("0.02"), Decimal(0))
    assert (small.embedding.dimensions, small.embedding.max_dimensions) == (1536, 1536)
    assert small.embedding.flexible_dimensions and small.embedding.token_input
    assert small.max_output_tokens == 0
    qwen = CATALOG.model("text-embedding-v4")
    assert qwen is not None and qwen.embedding is not None
    spec = qwen.embedding
    assert (spec.dimensions, spec.max_dimensions, spec.max_inputs) == (1024, 2048, 10)
    mistral = CATALOG.model("mistral-embed")
    assert mistral is not None and mistral.embedding is not None
    assert not mistral.embedding.flexible_dimensions and not mistral.embedding.token_input
    luna = CATALOG.model("gpt-5.6-luna")
    assert luna is not None and luna.kind == "chat" and luna.embedding is None


def test_only_openai_answers_base64_embeddings_itself() -> None:
    assert {name for name, p in CATALOG.providers.items() if p.embeddings_base64} == {"openai"}


@pytest.mark.parametrize(("entry", "problem"), [
    ({"kind": "vision"}, "kind must be one of"),
    ({"kind": "embedding", "output": "1", "dimensions": 8, "max_inputs": 1}, "no output price"),
    ({"kind": "embedding", "max_output_tokens": 10, "dimensions": 8, "max_inputs": 1}, "no output price"),
    ({"kind": "embedding", "dimensions": 8, "max_dimensions": 4, "max_inputs": 1}, "dimensions must be"),
    ({"kind": "embedding", "dimensions": 8, "max_inputs": 0}, "max_inputs positive"),
    ({"max_output_tokens": 0, "output": "1"}, "positive max_output_tokens"),
])
def test_a_malformed_model_entry_is_refused_when_the_catalog_loads(entry: dict, problem: str) -> None:
    raw = {"id": "m", "provider": "openai", "input": "1", "source": "s", **entry}
    raw.setdefault("max_output_tokens", 0)
    with pytest.raises(ValueError, match=problem):
        model_from_toml(raw)

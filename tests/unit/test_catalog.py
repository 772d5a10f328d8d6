"""The catalog's model lookup: catalog ids, and `provider/id` aliases under the model's own provider."""

import pytest

from alumia.domain.catalog import load_catalog

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

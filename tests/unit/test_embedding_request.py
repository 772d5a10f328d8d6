"""The embeddings request check (services/embedding_request.py): each bad shape a 422 naming its field."""

import orjson
import pytest

from alumia.domain.catalog import load_catalog
from alumia.errors import AppError
from alumia.services.chat_request import RequestLimits
from alumia.services.embedding_request import (
    MAX_INPUTS,
    EmbeddingRequest,
    check_for_model,
    parse_embedding_request,
)

CATALOG = load_catalog()
SECRET = "secret-value-7f3a"  # placed in each bad value: no message may echo it


def parse(body: dict, limits: RequestLimits = RequestLimits()) -> EmbeddingRequest:
    return parse_embedding_request(orjson.dumps(body), limits)


def refused(body: dict, code: str = "VALIDATION_ERROR", status: int = 422) -> str:
    with pytest.raises(AppError) as raised:
        parse(body)
    assert (raised.value.code, raised.value.status) == (code, status)
    assert SECRET not in raised.value.message
    return raised.value.message


@pytest.mark.parametrize(("given", "inputs"), [
    ("hello", ["hello"]),
    (["a", "b c"], ["a", "b c"]),
    ([1, 2, 3], [[1, 2, 3]]),
    ([[1, 2], [3]], [[1, 2], [3]]),
])
def test_every_input_shape_becomes_a_list_of_inputs(given: object, inputs: list) -> None:
    request = parse({"model": "m", "input": given})
    assert request.inputs == inputs
    assert request.tokens_given == (not isinstance(inputs[0], str))
    assert (request.dimensions, request.encoding_format, request.user) == (None, "float", None)


def test_optional_fields_are_read_and_null_is_absent() -> None:
    request = parse({"model": "m", "input": "x", "dimensions": 256, "encoding_format": "base64", "user": "u"})
    assert (request.dimensions, request.encoding_format, request.user) == (256, "base64", "u")
    request = parse({"model": "m", "input": "x", "dimensions": None, "encoding_format": None, "user": None})
    assert (request.dimensions, request.encoding_format, request.user) == (None, "float", None)


@pytest.mark.parametrize(("body", "field"), [
    ({"input": "x"}, "model"),
    ({"model": "", "input": "x"}, "model"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": ""}, "input"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": {"text": SECRET}}, "input"),
    ({"model": "m", "input": [SECRET, ""]}, "input[1]"),
    ({"model": "m", "input": [SECRET, 3]}, "input[1]"),
    ({"model": "m", "input": [1, -1]}, "input[1]"),
    ({"model": "m", "input": [1, True]}, "input[1]"),
    ({"model": "m", "input": [1, 2**31]}, "input[1]"),
    ({"model": "m", "input": [1.5]}, "input"),
    ({"model": "m", "input": [[1], []]}, "input[1]"),
    ({"model": "m", "input": [[1], [2, "x"]]}, "input[1][1]"),
    ({"model": "m", "input": [None]}, "input"),
    ({"model": "m", "input": ["x"] * (MAX_INPUTS + 1)}, "input"),
    ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "m", "input": "x", "dimensions": "256"}, "dimensions"),
    ({"model": "m", "input": "x", "dimensions": True}, "dimensions"),
    ({"model": "m", "input": "x", "encoding_format": SECRET}, "encoding_format"),
    ({"model": "m", "input": "x", "user": 7}, "user"),
    ({"model": "m", "input": "x", "messages": SECRET}, "messages"),
    ({"model": "m", "input": "x", "input_type": "query"}, "input_type"),
])
def test_each_bad_field_is_a_422_that_names_it(body: dict, field: str) -> None:
    assert refused(body).startswith(f"{field}: ")


def test_an_unknown_field_is_refused_with_the_fields_that_exist() -> None:
    assert "model, input, dimensions, encoding_format, user" in refused({"model": "m", "input": "x", "x": 1})


def test_a_body_over_the_limit_or_not_an_object_is_refused() -> None:
    with pytest.raises(AppError) as raised:
        parse({"model": "m", "input": "x" * 100}, RequestLimits(max_body_bytes=64))
    assert raised.value.status == 413
    with pytest.raises(AppError) as raised:
        parse_embedding_request(b"[1]")
    assert (raised.value.code, raised.value.status) == ("BAD_REQUEST", 400)


def check(body: dict, model_id: str) -> None:
    model = CATALOG.model(model_id)
    assert model is not None
    check_for_model(parse(body), model)


def test_what_each_model_accepts() -> None:
    check({"model": "m", "input": [[1, 2]], "dimensions": 1536}, "text-embedding-3-small")
    check({"model": "m", "input": ["a"] * 10, "dimensions": 2048}, "text-embedding-v4")
    check({"model": "m", "input": "a"}, "mistral-embed")


@pytest.mark.parametrize(("body", "model_id", "field", "words"), [
    ({"input": "a", "dimensions": 1537}, "text-embedding-3-small", "dimensions", "at most 1536"),
    ({"input": "a", "dimensions": 8}, "mistral-embed", "dimensions", "does not take dimensions"),
    ({"input": [1, 2]}, "gemini-embedding-001", "input", "takes text only"),
    ({"input": ["a"] * 11}, "text-embedding-v4", "input", "at most 10"),
    ({"input": ["a"] * 101}, "gemini-embedding-001", "input", "at most 100"),
])
def test_a_field_the_model_does_not_take_is_a_422(body: dict, model_id: str, field: str, words: str) -> None:
    with pytest.raises(AppError) as raised:
        check({"model": "m", **body}, model_id)
    assert (raised.value.code, raised.value.status) == ("VALIDATION_ERROR", 422)
    assert raised.value.message.startswith(f"{field}: ") and words in raised.value.message


def test_a_chat_model_is_a_400_that_points_to_chat_completions() -> None:
    with pytest.raises(AppError) as raised:
        check({"model": "m", "input": "a"}, "gpt-5.6-luna")
    assert (raised.value.code, raised.value.status) == ("BAD_REQUEST", 400)
    assert "/v1/chat/completions" in raised.value.message

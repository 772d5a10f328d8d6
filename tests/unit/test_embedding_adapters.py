"""The embeddings adapters (providers/embeddings.py, gemini_embeddings.py): pure translation, no network."""

import base64
import struct
from dataclasses import replace

import orjson
import pytest

from alumia.domain.usage import TokenUsage
from alumia.providers.base import UpstreamError
from alumia.providers.embeddings import OpenAIEmbeddings, encode_vector
from alumia.providers.gemini_embeddings import GeminiEmbeddings
from alumia.services.embedding_request import parse_embedding_request

KEY = "sk-test-unit-0000"


def request(**body: object):
    return parse_embedding_request(orjson.dumps({"model": "m", **body}))


def test_a_vector_is_encoded_as_openai_does_little_endian_float32() -> None:
    encoded = encode_vector([1.0, -2.5, 0])
    assert base64.b64decode(encoded) == struct.pack("<3f", 1.0, -2.5, 0.0)
    with pytest.raises(ValueError):
        encode_vector([1.0, "x"])


def test_a_native_base64_provider_is_sent_the_body_as_checked() -> None:
    req = request(input=["a"], encoding_format="base64", dimensions=8)
    up = OpenAIEmbeddings("openai", native_base64=True).build("http://u/v1", req, KEY, 0)
    assert up.url == "http://u/v1/embeddings" and up.headers["Authorization"] == f"Bearer {KEY}"
    assert orjson.loads(up.body) == {"model": "m", "input": ["a"], "encoding_format": "base64",
                                     "dimensions": 8}


def test_a_floats_only_provider_is_asked_for_floats_and_its_answer_encoded() -> None:
    req = request(input=["a", "b"], encoding_format="base64")
    adapter = OpenAIEmbeddings("qwen", native_base64=False)
    assert "encoding_format" not in orjson.loads(adapter.build("http://u", req, KEY, 0).body)
    answer = {"object": "list", "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2},
              "data": [{"object": "embedding", "index": i, "embedding": [0.5, i]} for i in range(2)]}
    out, usage = adapter.parse_response(orjson.dumps(answer), req)
    assert usage == TokenUsage(input_tokens=2)
    assert [d["embedding"] for d in orjson.loads(out)["data"]] == [encode_vector([0.5, 0]),
                                                                  encode_vector([0.5, 1])]


@pytest.mark.parametrize("answer", [b"not json", b"{}", b'{"data": [{"embedding": [1]}]}',
                                    b'{"data": [{"embedding": "x"}, {"embedding": [1]}]}'])
def test_an_unreadable_openai_format_answer_is_the_providers_error(answer: bytes) -> None:
    with pytest.raises(UpstreamError) as raised:
        OpenAIEmbeddings("qwen", native_base64=False).parse_response(
            answer, request(input=["a", "b"], encoding_format="base64"))
    assert raised.value.status == 502


def test_an_answer_without_usage_reports_none() -> None:
    answer = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}]}
    _, usage = OpenAIEmbeddings("mistral", native_base64=False).parse_response(orjson.dumps(answer),
                                                                               request(input="a"))
    assert usage is None


def test_gemini_gets_one_request_per_input_and_its_answer_becomes_openais() -> None:
    req = replace(request(input=["abcd", "abcdefgh"], dimensions=2), model="gemini-embedding-001")
    up = GeminiEmbeddings().build("http://g/v1beta", req, KEY, 0)
    assert up.url == "http://g/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert up.headers["x-goog-api-key"] == KEY and KEY not in up.url
    assert orjson.loads(up.body)["requests"][1] == {"model": "models/gemini-embedding-001",
                                                    "outputDimensionality": 2,
                                                    "content": {"parts": [{"text": "abcdefgh"}]}}
    out, usage = GeminiEmbeddings().parse_response(
        orjson.dumps({"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}), req)
    assert usage is None  # Gemini reports none: the gateway estimates, 1 + 2 tokens
    assert orjson.loads(out) == {"object": "list", "model": "gemini-embedding-001",
                                 "usage": {"prompt_tokens": 3, "total_tokens": 3},
                                 "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
                                          {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]}]}
    reported = {"embeddings": [{"values": [0.1]}, {"values": [0.3]}],
                "usageMetadata": {"promptTokenCount": 9}}
    out, usage = GeminiEmbeddings().parse_response(orjson.dumps(reported), req)
    assert usage == TokenUsage(input_tokens=9) and orjson.loads(out)["usage"]["prompt_tokens"] == 9
    with pytest.raises(UpstreamError):
        GeminiEmbeddings().parse_response(orjson.dumps({"embeddings": [{"values": [0.1]}]}), req)

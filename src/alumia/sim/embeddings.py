"""Embeddings, as the simulator answers them: OpenAI's `/embeddings` and Gemini's `batchEmbedContents`.

Served for every provider with an embedding model in the catalog, under its prefix:
``POST {prefix}/embeddings`` for OpenAI-format providers, ``POST {prefix}/models/{model}:batchEmbedContents``
for Gemini. The key is checked as for chat (`openai_format.key_problem`).

Vectors are deterministic: input k's vector is `vector(model, input, n)`, n values from a generator
seeded with the SHA-256 of the model and the input (a text, or its token ids), each a float rounded to
6 decimals in [-1, 1]; n is the request's `dimensions` (Gemini: `outputDimensionality`) or the
model's default (catalog `Embedding.dimensions`).

OpenAI format
    `input` as OpenAI takes it (a string, strings, token ids, token-id arrays). Answer
    ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage":
    {"prompt_tokens": P, "total_tokens": P}}`` with P = Σ over inputs of the whitespace-separated words
    of a text, or the number of token ids. ``encoding_format: "base64"`` gives each vector as the base64
    of its little-endian float32 values, as OpenAI does, but only from a provider whose catalog entry
    says `embeddings_base64`; any other answers it with a 400 (param "encoding_format"), which proves
    the gateway asks such providers for floats. A model that is not one of the provider's embedding
    models is a 404; `dimensions` for a model without `flexible_dimensions`, or above its
    `max_dimensions`, a 400; more inputs than the model's `max_inputs` a 400.
Gemini format
    ``{"requests": [{"model": "models/<id>", "content": {"parts": [{"text"}]}, "outputDimensionality"?}]}``,
    1 to 100 requests each naming the model of the URL, answered ``{"embeddings": [{"values": [...]}]}``
    with no usage, as Gemini does.

`/_sim/calls` records each call with ``received``: ``inputs`` (how many), and the fields the gateway
set — ``dimensions``, ``encoding_format``, ``user`` and ``models`` (OpenAI), or ``outputDimensionality``
(the list of each request's value) and ``models`` (each request's model) for Gemini.
"""

import base64
import hashlib
import random
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from alumia.domain.catalog import Embedding, Model
from alumia.sim.calls import CallLog, received_fields
from alumia.sim.errors import error_response, google_error, openai_error
from alumia.sim.gemini_format import key_of as gemini_key_of
from alumia.sim.openai_format import key_of, key_problem

GEMINI_MAX_REQUESTS = 100
_JSON = "application/json"


def vector(model: str, item: str | list[int], dimensions: int) -> list[float]:
    """The deterministic embedding of one input."""
    seed = hashlib.sha256(f"{model}\0{item!r}".encode()).digest()
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    return [round(rng.uniform(-1, 1), 6) for _ in range(dimensions)]


def encoded(values: list[float]) -> str:
    """OpenAI's base64 form of a vector: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def _openai_inputs(value: Any) -> list[str] | list[list[int]] | None:
    """The inputs of an OpenAI `input`, or None when it is none of the four shapes."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) for v in value):
        return value
    if all(type(v) is int for v in value):
        return [value]
    if all(isinstance(v, list) and v and all(type(t) is int for t in v) for v in value):
        return value
    return None


def _tokens(item: str | list[int]) -> int:
    return len(item.split()) if isinstance(item, str) else len(item)


def _openai_problem(body: Any, models: Mapping[str, Embedding], native_base64: bool) -> Response | None:
    if not isinstance(body, dict):
        return error_response(openai_error(400, "The request body must be a JSON object."))
    model = body.get("model")
    if not isinstance(model, str) or model not in models:
        return error_response(openai_error(404, f"The model `{model}` does not exist.", param="model",
                                           code="model_not_found"))
    spec = models[model]
    inputs = _openai_inputs(body.get("input"))
    if inputs is None:
        return error_response(openai_error(400, "'input' is invalid.", param="input", code="invalid_value"))
    if len(inputs) > spec.max_inputs:
        return error_response(openai_error(400, f"at most {spec.max_inputs} inputs", param="input"))
    if body.get("encoding_format") not in (None, "float", "base64") or (
            body.get("encoding_format") == "base64" and not native_base64):
        return error_response(openai_error(400, "encoding_format must be float", param="encoding_format",
                                           code="invalid_value"))
    dimensions = body.get("dimensions")
    if dimensions is not None and (not spec.flexible_dimensions or type(dimensions) is not int
                                   or not 1 <= dimensions <= spec.max_dimensions):
        return error_response(openai_error(400, "This model does not support these dimensions.",
                                           param="dimensions", code="invalid_value"))
    return None


def openai_routes(provider: str, prefix: str, models: Mapping[str, Embedding], log: CallLog, *,
                  native_base64: bool) -> list[Route]:
    """`POST {prefix}/embeddings` for one OpenAI-format provider's embedding models."""
    path = f"{prefix}/embeddings"

    async def embeddings(request: Request) -> Response:
        raw = await request.body()
        key = key_of(request, provider)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        fields = body if isinstance(body, dict) else {}
        inputs: Sequence[str | list[int]] = _openai_inputs(fields.get("input")) or []
        model = fields.get("model")
        received = received_fields(raw, fields, ("dimensions", "encoding_format", "user"))
        log.record(provider=provider, model=model if isinstance(model, str) else None, key=key, stream=False,
                   path=path, received={**received, "inputs": len(inputs)})
        if (problem := key_problem(provider, "openai", key, log)) is not None:
            return error_response(problem)
        if (refusal := _openai_problem(body, models, native_base64)) is not None:
            return refusal
        assert isinstance(model, str)
        size = fields.get("dimensions") or models[model].dimensions
        as_base64 = fields.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            values = vector(model, item, size)
            data.append({"object": "embedding", "index": index,
                         "embedding": encoded(values) if as_base64 else values})
        tokens = sum(_tokens(item) for item in inputs)
        answer = {"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return Response(orjson.dumps(answer), media_type=_JSON)

    return [Route(path, embeddings, methods=["POST"])]


def _gemini_texts(requests: Any, model: str, spec: Embedding) -> list[tuple[str, int]] | str:
    """Each request's text and vector size, or what is wrong (Gemini's wording where known)."""
    if not isinstance(requests, list) or not requests:
        return "* BatchEmbedContentsRequest.requests: must not be empty"
    if len(requests) > GEMINI_MAX_REQUESTS:
        return "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
    out = []
    for i, one in enumerate(requests):
        if not isinstance(one, dict) or one.get("model") != f"models/{model}":
            return f"* BatchEmbedContentsRequest.requests[{i}].model: must be the model of the URL"
        parts = (one.get("content") or {}).get("parts") if isinstance(one.get("content"), dict) else None
        if not isinstance(parts, list) or not parts:
            return f"* BatchEmbedContentsRequest.requests[{i}].content: contents must not be empty"
        text = " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
        size = one.get("outputDimensionality", spec.dimensions)
        if type(size) is not int or not 1 <= size <= spec.max_dimensions:
            return f"* BatchEmbedContentsRequest.requests[{i}].output_dimensionality: out of range"
        out.append((text, size))
    return out


def gemini_routes(provider: str, prefix: str, models: Mapping[str, Embedding], log: CallLog) -> list[Route]:
    """`POST {prefix}/models/{model}:batchEmbedContents` for a Gemini-format provider."""

    async def batch_embed(request: Request) -> Response:
        raw = await request.body()
        key = gemini_key_of(request)
        model = request.path_params["model"]
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        requests = body.get("requests") if isinstance(body, dict) else None
        listed = [r for r in requests if isinstance(r, dict)] if isinstance(requests, list) else []
        received = {"inputs": len(listed),
                    "outputDimensionality": [r.get("outputDimensionality") for r in listed],
                    "models": [r.get("model") for r in listed]}
        log.record(provider=provider, model=model, key=key, stream=False, path=request.url.path,
                   received=received)
        if (problem := key_problem(provider, "gemini", key, log)) is not None:
            return error_response(problem)
        if model not in models:
            return error_response(google_error(404, f"models/{model} is not found for API version v1beta, "
                                                    "or is not supported for embedContent.",
                                               rpc_status="NOT_FOUND"))
        texts = _gemini_texts(requests, model, models[model])
        if isinstance(texts, str):
            return error_response(google_error(400, texts))
        answer = {"embeddings": [{"values": vector(model, text, size)} for text, size in texts]}
        return Response(orjson.dumps(answer), media_type=_JSON)

    return [Route(f"{prefix}/models/{{model}}:batchEmbedContents", batch_embed, methods=["POST"])]


def embedding_specs(models: Mapping[str, Model], provider: str) -> dict[str, Embedding]:
    """A provider's embedding models by id, with what each accepts."""
    return {m.id: m.embedding for m in models.values() if m.provider == provider and m.embedding is not None}

"""Embeddings in Gemini's wire format: `POST {base}/models/{model}:batchEmbedContents`.

Each OpenAI input becomes one `EmbedContentRequest` (`{"model": "models/<id>", "content": {"parts":
[{"text"}]}}`, with `outputDimensionality` when the client set `dimensions`), and the answer's
`embeddings[i].values` become OpenAI's `data[i].embedding` (base64-encoded when asked: Gemini only
sends floats). The key travels only in the `x-goog-api-key` header.

Gemini's embeddings answer carries no token count. The answer's `usage` is then the gateway's
estimate (domain/estimate.py `estimate_embedding_input`), the same the call is metered with, and the
call's usage is recorded as estimated; a `usageMetadata.promptTokenCount`, if Gemini ever sends one,
is used instead. Token-id inputs are refused before this (the catalog says Gemini's model takes text).
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from alumia.domain.estimate import estimate_embedding_input
from alumia.domain.usage import TokenUsage
from alumia.providers.base import UpstreamError, UpstreamRequest
from alumia.providers.embeddings import encode_vector, malformed
from alumia.providers.gemini import GeminiAdapter

if TYPE_CHECKING:
    from alumia.services.embedding_request import EmbeddingRequest

PROVIDER = "gemini"


class GeminiEmbeddings:
    """Gemini's batchEmbedContents, spoken in OpenAI's embeddings shape."""

    def __init__(self) -> None:
        self._errors = GeminiAdapter()  # the same Google RPC error bodies as generateContent

    def build(self, base_url: str, request: "EmbeddingRequest", key: str,
              max_output_tokens: int) -> UpstreamRequest:
        """One EmbedContentRequest per input, in order."""
        one: dict[str, Any] = {"model": f"models/{request.model}"}
        if request.dimensions is not None:
            one["outputDimensionality"] = request.dimensions
        body = {"requests": [{**one, "content": {"parts": [{"text": text}]}} for text in request.inputs]}
        return UpstreamRequest(
            url=f"{base_url}/models/{quote(request.model, safe='')}:batchEmbedContents",
            headers={"x-goog-api-key": key, "content-type": "application/json"},
            body=orjson.dumps(body),
        )

    def parse_response(self, body: bytes, request: "EmbeddingRequest") -> tuple[bytes, TokenUsage | None]:
        """OpenAI's CreateEmbeddingResponse for Gemini's answer; the usage reported, or None."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise malformed(PROVIDER, "not JSON") from exc
        embeddings = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(embeddings, list) or len(embeddings) != len(request.inputs):
            raise malformed(PROVIDER, "not one embedding per input")
        base64 = request.encoding_format == "base64"
        items = []
        for index, embedding in enumerate(embeddings):
            values = embedding.get("values") if isinstance(embedding, dict) else None
            if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
                raise malformed(PROVIDER, "an embedding is not a list of numbers")
            vector = encode_vector(values) if base64 else values
            items.append({"object": "embedding", "index": index, "embedding": vector})
        meta = data.get("usageMetadata")
        count = meta.get("promptTokenCount") if isinstance(meta, dict) else None
        reported = type(count) is int and count >= 0
        tokens: int = count if type(count) is int and count >= 0 else estimate_embedding_input(request.inputs)
        out = {"object": "list", "data": items, "model": request.model,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return orjson.dumps(out), TokenUsage(input_tokens=tokens) if reported else None

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """As Gemini's generateContent errors are read."""
        return self._errors.parse_error(provider, status, body, headers)

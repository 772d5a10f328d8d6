"""Embeddings in OpenAI's wire format (`POST {base}/embeddings`), and what every embeddings adapter shares.

An embeddings adapter has the three methods of a chat adapter that one exchange uses — `build`,
`parse_response` and `parse_error` — so the gateway's call path (services/proxy.py `send`) sends,
reads and maps errors for both APIs alike. It reads the request checked by
services/embedding_request.py, and answers in OpenAI's `CreateEmbeddingResponse` shape.

`encoding_format: base64` is OpenAI's: each vector as the base64 of its little-endian float32 values.
A provider whose API answers base64 itself (catalog `Provider.embeddings_base64`) is asked for it;
any other is asked for floats, which the adapter encodes on the way back.
"""

import base64
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import orjson

from alumia.domain.usage import TokenUsage
from alumia.providers.base import UpstreamError, UpstreamRequest, has_counts
from alumia.providers.openai_compat import OpenAICompatAdapter

if TYPE_CHECKING:
    from alumia.services.embedding_request import EmbeddingRequest


class EmbeddingAdapter(Protocol):
    """One wire format's embeddings API: the request out, the answer back in OpenAI's shape."""

    def build(self, base_url: str, request: "EmbeddingRequest", key: str,
              max_output_tokens: int) -> UpstreamRequest:
        """The upstream request, authenticated with `key` (`max_output_tokens` is unused: always 0)."""
        ...

    def parse_response(self, body: bytes, request: "EmbeddingRequest") -> tuple[bytes, TokenUsage | None]:
        """The OpenAI embeddings body for the client and the input tokens the provider reported (None
        when it reported none; the gateway then estimates them)."""
        ...

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """An upstream error response as an UpstreamError."""
        ...


def encode_vector(values: object) -> str:
    """A vector as OpenAI's base64: its values as little-endian float32, base64-encoded.

    Raises ValueError when `values` is not a list of numbers.
    """
    if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
        raise ValueError("an embedding is not a list of numbers")
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def malformed(provider: str, what: str) -> UpstreamError:
    """The provider's 200 answer could not be read as embeddings (502)."""
    return UpstreamError(provider=provider, status=502, code="malformed_response",
                         message=f"the provider's embeddings answer could not be read: {what}")


class OpenAIEmbeddings:
    """One OpenAI-format provider's `/embeddings`: the checked body goes on with the catalog's model id."""

    def __init__(self, provider: str, native_base64: bool) -> None:
        self.provider = provider
        self.native_base64 = native_base64
        self._errors = OpenAICompatAdapter(provider)  # the same error shapes as its chat completions

    def _encodes(self, request: "EmbeddingRequest") -> bool:
        """Whether the gateway encodes this answer: base64 asked of a provider that only sends floats."""
        return request.encoding_format == "base64" and not self.native_base64

    def build(self, base_url: str, request: "EmbeddingRequest", key: str,
              max_output_tokens: int) -> UpstreamRequest:
        """POST {base}/embeddings with Bearer auth: the parsed body re-serialised (floats asked for when
        the gateway encodes; absent, encoding_format means floats on every provider)."""
        body = dict(request.body)
        if self._encodes(request):
            body.pop("encoding_format", None)
        return UpstreamRequest(
            url=f"{base_url}/embeddings",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            body=orjson.dumps(body),
        )

    def parse_response(self, body: bytes, request: "EmbeddingRequest") -> tuple[bytes, TokenUsage | None]:
        """The provider's body as sent (its vectors encoded when the gateway encodes), and its usage.

        The usage is complete when it has prompt_tokens: embeddings have no output.
        """
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise malformed(self.provider, "not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise malformed(self.provider, "no data")
        if len(data["data"]) != len(request.inputs):
            raise malformed(self.provider, f"{len(data['data'])} embeddings for {len(request.inputs)} inputs")
        if self._encodes(request):
            try:
                for item in data["data"]:
                    item["embedding"] = encode_vector(item["embedding"])
            except (ValueError, KeyError, TypeError, struct.error) as exc:
                raise malformed(self.provider, "an embedding is not a list of numbers") from exc
            body = orjson.dumps(data)
        usage = data.get("usage")
        if not has_counts(usage, "prompt_tokens"):
            return body, None
        return body, TokenUsage(input_tokens=usage["prompt_tokens"])

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """As the provider's chat errors are read (business codes, retry-after)."""
        return self._errors.parse_error(provider, status, body, headers)

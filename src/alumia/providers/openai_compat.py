"""The OpenAI chat-completions wire format, spoken by twelve of the fourteen providers.

Each provider bends the format a little (docs/providers.md); the differences live here, keyed
by provider name, so the rest of the gateway sees one shape:
- usage: DeepSeek's prompt_cache_hit_tokens, Moonshot's top-level cached_tokens and its streamed usage
  inside choices[0], Groq's x_groq.usage, xAI's reasoning tokens outside completion_tokens;
- errors: MiniMax's base_resp inside an HTTP 200, Zhipu's business codes, xAI's 400 for a bad key.
"""

from collections.abc import Mapping
from typing import Any

import orjson

from alumia.domain.catalog import OPENAI_LIMIT_FIELDS
from alumia.domain.usage import TokenUsage
from alumia.providers.base import ChatRequest, UpstreamError, UpstreamRequest, has_counts, retry_after
from alumia.providers.errors import error_message
from alumia.providers.openai_shape import error_frame, openai_usage, usage_from_openai
from alumia.sse import data_frame

NVIDIA_CHECK_MODEL = "meta/llama-3.3-70b-instruct"  # broadly available to NIM accounts

# MiniMax base_resp.status_code and Zhipu error.code, as the HTTP status they mean.
_MINIMAX_STATUS = {1001: 504, 1002: 429, 1004: 401, 1008: 402}
_ZHIPU_STATUS = {"1000": 401, "1001": 401, "1002": 401, "1003": 401, "1004": 401, "1113": 402,
                 "1211": 404, "1301": 400, "1302": 429, "1303": 429, "1305": 429}


def _minimax_error(body: Mapping[str, Any]) -> UpstreamError | None:
    base = body.get("base_resp")
    if not isinstance(base, Mapping) or not base.get("status_code"):
        return None
    code = int(base["status_code"])
    return UpstreamError(provider="minimax", status=_MINIMAX_STATUS.get(code, 502),
                         message=str(base.get("status_msg") or "MiniMax error"), code=str(code))


def _usage_in(chunk: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, str | None]:
    """Where a chunk carries usage: the standard place, Moonshot's choices[0], or Groq's x_groq."""
    if chunk.get("usage"):
        return chunk["usage"], "usage"
    choices = chunk.get("choices") or []
    if choices and isinstance(choices[0], Mapping) and choices[0].get("usage"):
        return choices[0]["usage"], "choice"
    x_groq = chunk.get("x_groq")
    if isinstance(x_groq, Mapping) and x_groq.get("usage"):
        return x_groq["usage"], "x_groq"
    return None, None


class OpenAIStreamTranslator:
    """Passes chunks through, reading usage on the way.

    Only payloads that mention usage (or MiniMax's base_resp) are parsed. The usage reaches the client
    only if it asked for it (stream_options.include_usage); the gateway always asks upstream, to meter
    the call. A provider that puts usage elsewhere gets a standard usage chunk written for it.
    """

    def __init__(self, provider: str, include_usage: bool) -> None:
        self.provider = provider
        self.include_usage = include_usage
        self.usage: TokenUsage | None = None
        self.finished = False
        self._standard_usage_sent = False
        self._last: Mapping[str, Any] | None = None

    def feed(self, payload: bytes) -> list[bytes]:
        """Frames for the client for one upstream `data:` payload."""
        if payload == b"[DONE]":
            self.finished = True
            return []
        if b'"usage"' not in payload and b'"base_resp"' not in payload:
            return [b"data: " + payload + b"\n\n"]
        chunk = orjson.loads(payload)
        if error := _minimax_error(chunk):
            return [error_frame(error.message, error.code or "UPSTREAM_ERROR")]
        raw, where = _usage_in(chunk)
        if raw is None:
            return [b"data: " + payload + b"\n\n"]
        self.usage = usage_from_openai(raw, self.provider)
        self._last = chunk
        if where == "usage" and self.include_usage:
            self._standard_usage_sent = True
            return [b"data: " + payload + b"\n\n"]
        if not chunk.get("choices"):
            return []
        if where == "usage":
            chunk["usage"] = None
        elif where == "choice":
            del chunk["choices"][0]["usage"]
        else:
            del chunk["x_groq"]["usage"]
        return [data_frame(chunk)]

    def close(self) -> list[bytes]:
        """A standard usage chunk when the client asked and the provider put usage elsewhere."""
        if not (self.include_usage and self.usage and self._last) or self._standard_usage_sent:
            return []
        last = self._last
        return [data_frame({"id": last.get("id", ""), "object": "chat.completion.chunk",
                      "created": last.get("created", 0), "model": last.get("model", ""), "choices": [],
                      "usage": openai_usage(self.usage)})]


class OpenAICompatAdapter:
    """One provider that speaks the OpenAI format: the client's request goes on, re-serialised.

    `limit_field` is the one field this provider reads the output limit from (the catalog's
    `Provider.limit_field`); `supports_n` whether it honours `n` (`Provider.supports_n`).
    """

    def __init__(self, provider: str, limit_field: str = "max_completion_tokens",
                 supports_n: bool = False) -> None:
        self.provider = provider
        self.limit_field = limit_field
        self.supports_n = supports_n

    def build(self, base_url: str, request: ChatRequest, key: str, max_output_tokens: int) -> UpstreamRequest:
        """POST {base}/chat/completions with Bearer auth; streams always ask for usage.

        The body is the parsed `request.body` serialised again, never the client's bytes, so the
        provider reads exactly what the gateway read and priced (a duplicate key has one value). It
        carries `max_output_tokens`, the limit the hold was sized for, in `limit_field` and in no
        other limit field, and `n` only where the provider honours it and more than one is asked.
        """
        body = dict(request.body)
        for name in OPENAI_LIMIT_FIELDS:  # only the provider's own field is sent
            body.pop(name, None)
        body[self.limit_field] = max_output_tokens
        body.pop("n", None)
        if self.supports_n and request.choices > 1:
            body["n"] = request.choices
        if request.stream and not request.include_usage:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return UpstreamRequest(
            url=f"{base_url}/chat/completions",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            body=orjson.dumps(body),
        )

    def parse_response(self, body: bytes, request: ChatRequest) -> tuple[bytes, TokenUsage | None]:
        """The body is returned as the provider sent it; only its usage (and MiniMax's errors) are read.

        Usage is complete when it has both prompt_tokens and completion_tokens; otherwise None.
        """
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(provider=self.provider, status=502, code="malformed_response",
                                message="the provider returned a body that is not JSON") from exc
        if isinstance(data, dict) and (error := _minimax_error(data)):
            raise error
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UpstreamError(provider=self.provider, status=502, code="malformed_response",
                                message="the provider returned a body without choices")
        usage = data.get("usage")
        if not has_counts(usage, "prompt_tokens", "completion_tokens"):
            return body, None
        return body, usage_from_openai(usage, self.provider)

    def stream_translator(self, request: ChatRequest) -> OpenAIStreamTranslator:
        """A pass-through translator for this provider."""
        return OpenAIStreamTranslator(self.provider, include_usage=request.include_usage)

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """Read the message out of any of the providers' error shapes; map business codes to statuses."""
        message, code = error_message(body)
        if provider == "zhipu" and code in _ZHIPU_STATUS:
            status = _ZHIPU_STATUS[code]
        if provider == "xai" and status == 400 and "api key" in message.lower():
            status = 401  # xAI answers a bad key with 400
        return UpstreamError(provider=provider, status=status, message=message, code=code,
                             retry_after=retry_after(headers))

    def key_check(self, base_url: str, key: str) -> UpstreamRequest:
        """GET {base}/models; NVIDIA lists its whole catalog to any key, so it gets a 1-token chat."""
        headers = {"Authorization": f"Bearer {key}"}
        if self.provider != "nvidia":
            return UpstreamRequest(url=f"{base_url}/models", headers=headers)
        body = {"model": NVIDIA_CHECK_MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
        return UpstreamRequest(url=f"{base_url}/chat/completions", body=orjson.dumps(body),
                               headers={**headers, "Content-Type": "application/json"})

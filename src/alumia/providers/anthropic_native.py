"""Claude through the Anthropic door, as Claude speaks: no round trip through OpenAI's shape.

A Messages request for an Anthropic-format model goes out as the client wrote it (its checked fields,
`cache_control` marks, `thinking` and earlier thinking blocks with their signatures untouched), with
the catalog id and the output limit the hold was sized for. The answer comes back as Anthropic wrote
it. The gateway's core (metering, the hold's ceiling, key redaction, estimates) still reads the
OpenAI view the Anthropic adapter makes of the answer, so this adapter hands it both: the view, with
Anthropic's own message or event riding along under a key of its own, which the Anthropic door
(gateway/anthropic_front.py) sends to the client instead of translating the view back.

`count_tokens_request` is Anthropic's free token count (`POST /v1/messages/count_tokens`).
"""

from collections.abc import Mapping
from typing import Any

import orjson

from alumia.domain.usage import TokenUsage
from alumia.providers.anthropic import (
    ANTHROPIC_VERSION,
    AnthropicAdapter,
    AnthropicStreamTranslator,
    completion,
)
from alumia.providers.base import ChatRequest, UpstreamRequest
from alumia.providers.openai_answer import answer_text_bytes

# Where the provider's own answer rides in the OpenAI view (never sent to a client as is).
MESSAGE_KEY = "anthropic_message"
EVENT_KEY = "anthropic_event"
# The view's text bytes as built: a view the gateway cut to its hold has fewer (services/proxy.py).
TEXT_BYTES_KEY = "anthropic_text_bytes"

# The Messages fields sent on. Anything else a client sends stays here: server tools, service tiers,
# containers and the like have prices of their own the gateway does not meter.
MESSAGES_FIELDS = ("messages", "system", "metadata", "stop_sequences", "temperature", "top_k", "top_p",
                   "tools", "tool_choice", "thinking")
COUNT_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking")


def _headers(key: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}


def native_body(messages: Mapping[str, Any], model: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    """The Messages body sent for a client's checked one: its own fields, our model id and limit."""
    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    for name in MESSAGES_FIELDS:
        if messages.get(name) is not None:
            out[name] = messages[name]
    if stream:
        out["stream"] = True
    return out


def count_tokens_request(base_url: str, body: Mapping[str, Any], model: str, key: str) -> UpstreamRequest:
    """POST {base}/messages/count_tokens for a client's checked count request, with our model id."""
    out: dict[str, Any] = {"model": model}
    for name in COUNT_FIELDS:
        if body.get(name) is not None:
            out[name] = body[name]
    return UpstreamRequest(url=f"{base_url}/messages/count_tokens", headers=_headers(key),
                           body=orjson.dumps(out))


def counted_tokens(body: bytes) -> int:
    """`input_tokens` of Anthropic's count answer; ValueError when the answer has none."""
    answer = orjson.loads(body)
    count = answer.get("input_tokens") if isinstance(answer, dict) else None
    if type(count) is not int or count < 0:
        raise ValueError("the count answer has no input_tokens")
    return count


class NativeStreamTranslator(AnthropicStreamTranslator):
    """The Anthropic stream translator, each frame also carrying the event it was made from.

    Every event yields one frame: the OpenAI chunk the event makes (or an empty one), with the event's
    own JSON under EVENT_KEY, so the door relays Anthropic's events exactly while the gateway measures
    the chunks. An `error` event stays an OpenAI error frame: its text goes out the way every error
    frame's does.
    """

    def feed(self, payload: bytes) -> list[bytes]:
        """Frames for one upstream `data:` payload, each with the event attached."""
        frames = super().feed(payload)
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return frames
        if not isinstance(event, dict) or event.get("type") == "error":
            return frames
        attached = b',"' + EVENT_KEY.encode() + b'":' + payload + b"}\n\n"
        if not frames:
            return [b'data: {"choices":[]' + attached]
        # An OpenAI chunk frame is `data: {...}\n\n`: the event goes in before its closing brace.
        return [frames[0][:-3] + attached, *frames[1:]]


class AnthropicNativeAdapter(AnthropicAdapter):
    """The Anthropic adapter for one Messages request from the Anthropic door, sent as it came."""

    def __init__(self, messages: Mapping[str, Any]) -> None:
        self.messages = messages

    def build(self, base_url: str, request: ChatRequest, key: str, max_output_tokens: int) -> UpstreamRequest:
        """POST {base}/messages with the client's Messages body, our model id and `max_output_tokens`."""
        body = native_body(self.messages, request.model, max_output_tokens, request.stream)
        return UpstreamRequest(url=f"{base_url}/messages", headers=_headers(key), body=orjson.dumps(body))

    def parse_response(self, body: bytes, request: ChatRequest) -> tuple[bytes, TokenUsage | None]:
        """The OpenAI view of Anthropic's message, with the message itself and the view's text bytes."""
        message = orjson.loads(body)
        view, usage = completion(message, request)
        view[TEXT_BYTES_KEY] = answer_text_bytes(orjson.dumps(view))
        view[MESSAGE_KEY] = message
        return orjson.dumps(view), usage

    def stream_translator(self, request: ChatRequest) -> NativeStreamTranslator:
        """A translator that keeps each Anthropic event with its chunk."""
        return NativeStreamTranslator(request)

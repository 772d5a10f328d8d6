"""How one Messages request goes through the gateway: natively to Claude, translated to the rest.

Both ways the gateway's call (services/proxy.complete) gets an OpenAI view of the request, which it
routes, prices, holds for and meters as any chat completion. For an Anthropic-format model the
provider is then sent the checked Messages body itself (providers/anthropic_native.py), so
`cache_control`, `thinking` and signed thinking blocks reach Claude intact; for any other model the
view is what is sent, `thinking` carried by the provider's reasoning control
(gateway/anthropic_thinking.py).

The hold's input side is the request's bytes. A native call's view lacks what only Claude reads (the
earlier thinking blocks, which count as input), so the view is padded with JSON whitespace to the
size of the body actually sent: the hold covers what goes out, and the view still parses the same.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from alumia.domain.catalog import Catalog, Provider
from alumia.gateway.anthropic_front import openai_request
from alumia.gateway.anthropic_thinking import parse_thinking, reasoning_fields
from alumia.providers.anthropic_native import AnthropicNativeAdapter, native_body
from alumia.providers.base import Adapter


@dataclass(frozen=True, slots=True)
class MessagesCall:
    """One checked Messages request, ready for the gateway's call."""

    raw: bytes  # the OpenAI view the gateway parses, prices, holds for and meters
    model: str  # as the client named it
    thinking: bool  # the client asked for thinking: reasoning comes back as thinking blocks
    native: Mapping[str, Any] | None = None  # the Messages body, sent as it is to an Anthropic model

    def adapt(self, provider: Provider, adapter: Adapter) -> Adapter:
        """The adapter for the call: the native one for an Anthropic-format provider."""
        if self.native is not None and provider.wire_format == "anthropic":
            return AnthropicNativeAdapter(self.native)
        return adapter


def padded(view: bytes, sent: int) -> bytes:
    """`view` with trailing whitespace up to `sent` bytes (JSON allows it), so a hold sized on the
    view's length covers a body of `sent` bytes."""
    return view + b" " * max(0, sent - len(view))


def messages_call(body: dict[str, Any], catalog: Catalog) -> MessagesCall:
    """The call for a Messages request; VALIDATION_ERROR (422) or BAD_REQUEST (400) for a bad one.

    An unknown model is left to the gateway's call, which answers it as for any chat completion.
    """
    view = openai_request(body)
    thinking = parse_thinking(body.get("thinking"), body["max_tokens"])
    asks = thinking is not None and thinking.on
    model = catalog.model(view["model"])
    provider = catalog.provider_of(model) if model is not None else None
    if model is not None and provider is not None and provider.wire_format == "anthropic":
        sent = len(orjson.dumps(native_body(body, model.id, body["max_tokens"], bool(body.get("stream")))))
        return MessagesCall(raw=padded(orjson.dumps(view), sent), model=view["model"], thinking=asks,
                            native=body)
    if provider is not None:
        view.update(reasoning_fields(thinking, provider))
    return MessagesCall(raw=orjson.dumps(view), model=view["model"], thinking=asks)

"""Server-sent events as the gateway writes them: one JSON object per frame, with or without an event name."""

from collections.abc import Mapping
from typing import Any

import orjson


def data_frame(payload: Mapping[str, Any]) -> bytes:
    """`data: <json>` and the blank line that ends the frame (OpenAI's streams)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def event_frame(kind: str, payload: Mapping[str, Any]) -> bytes:
    """`event: <kind>` then `data: <json>` (Anthropic's and the Responses API's streams)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

"""What metering writes about one call, as the process journals it before the write (storage/outbox.py)."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from alumia.domain.routing import Route
from alumia.domain.usage import TokenUsage


class Api(StrEnum):
    """The front door a call came through, as its usage record says."""

    CHAT = "chat"  # POST /v1/chat/completions, and the lab
    MESSAGES = "messages"  # Anthropic's POST /v1/messages
    RESPONSES = "responses"  # POST /v1/responses
    EMBEDDINGS = "embeddings"  # POST /v1/embeddings
    UNKNOWN = "unknown"  # a record journaled, or a row written, before the door was recorded


@dataclass(frozen=True, slots=True)
class CallRecord:
    """Everything metering writes about one call."""

    request_id: str
    org_id: str
    api_key_id: str | None
    api_key_last_used_at: datetime | None
    agent_id: str | None
    hold_id: str | None
    model: str
    provider: str
    route: Route
    byok_key_id: str | None
    byok_last_used_at: datetime | None
    stream: bool
    usage: TokenUsage
    usage_estimated: bool
    cost_microcents: int
    fee_microcents: int
    charged_microcents: int
    status: str
    http_status: int
    error_code: str | None
    latency_ms: int
    created_at: datetime
    # The org's auto top-up threshold when auto top-up is on (read with the call's context), else None.
    auto_topup_threshold_cents: int | None = None
    api: Api = Api.UNKNOWN

"""One call's state between routing and metering, shared by the call path, the stream relay and the doors.

A `Call` knows who calls (the context), what (model, provider, request), the route decided, its tariff
and hold, and whether it has been metered; it meters itself once, through the app's `Metering`.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from alumia.clock import utcnow
from alumia.domain.call_record import Api, CallRecord
from alumia.domain.catalog import Model, Provider
from alumia.domain.routing import Route, RouteDecision
from alumia.domain.tariff import Tariff
from alumia.domain.usage import TokenUsage
from alumia.errors import AppError, ErrorCode
from alumia.providers.base import ChatRequest
from alumia.services.embedding_request import EmbeddingRequest
from alumia.services.metering import Metering
from alumia.storage.db import DATABASE_DOWN
from alumia.storage.gateway import ActiveKey, CallContext

log = logging.getLogger("alumia.gateway")


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What to send the client: a whole body, or a stream of SSE frames."""

    route: Route
    status: int
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def unavailable(what: str) -> AppError:
    """The caller's error while the database cannot be reached: nothing was sent or charged."""
    return AppError(ErrorCode.SERVICE_UNAVAILABLE,
                    f"the gateway cannot reach its database to {what}; nothing "
                    "was sent to the provider or charged. Try again shortly", headers={"Retry-After": "2"})


# The request a call carries: a chat completion's (both front doors) or an embeddings request.
R = TypeVar("R", ChatRequest, EmbeddingRequest)


class Call(Generic[R]):
    """The state of one call between routing and metering."""

    def __init__(self, ctx: CallContext, model: Model, provider: Provider, decision: RouteDecision,
                 request: R, request_id: str, started: float, tariff: Tariff,
                 metering: Metering, byok: ActiveKey | None, api: Api) -> None:
        self.ctx, self.model, self.provider, self.decision, self.api = ctx, model, provider, decision, api
        self.request: R = request
        self.request_id, self.started = request_id, started
        self.tariff, self.metering, self.byok = tariff, metering, byok
        self.hold = 0  # microcents reserved for this call (platform route), 0 when none
        # The output limit each choice is held for and sent upstream with: the client's, or the model's.
        self.output_limit = request.max_output_tokens or model.max_output_tokens
        self.metered = False

    def record(self, usage: TokenUsage, status: str, http_status: int, error_code: str | None,
               usage_estimated: bool) -> CallRecord:
        """What metering writes for this call ending with `usage`: priced by its tariff, within its hold."""
        bill = self.tariff.bill(usage, self.hold)
        if self.hold and bill.cost + bill.fee > bill.charged:
            # The reservation is the promise made before the call: never bill past it.
            log.warning("call %s cost more than its hold of %s microcents; charging the hold",
                        self.request_id, self.hold)
        ctx = self.ctx
        return CallRecord(
            request_id=self.request_id, org_id=ctx.org_id, api_key_id=ctx.api_key_id,
            agent_id=ctx.agent_id, hold_id=self.request_id if self.hold else None,
            api_key_last_used_at=ctx.api_key_last_used_at, model=self.model.id,
            provider=self.provider.name, route=self.decision.route, byok_key_id=self.decision.byok_key_id,
            byok_last_used_at=self.byok.last_used_at if self.byok else None, stream=self.request.stream,
            usage=usage, usage_estimated=usage_estimated,
            cost_microcents=bill.cost, fee_microcents=bill.fee, charged_microcents=bill.charged,
            status=status, http_status=http_status, error_code=error_code,
            latency_ms=int((time.perf_counter() - self.started) * 1000), created_at=utcnow(),
            auto_topup_threshold_cents=ctx.auto_topup_threshold_cents if ctx.auto_topup_enabled else None,
            api=self.api)

    async def meter(self, usage: TokenUsage, status: str = "ok", http_status: int = 200,
                    error_code: str | None = None, *, usage_estimated: bool = False) -> None:
        """Commit the call's record and charge (and close its hold), and return once committed.

        The write runs in a task of its own that a cancelled request (a client that leaves a stream
        while it is metered) cannot interrupt.
        """
        try:
            await asyncio.shield(self._start(usage, status, http_status, error_code, usage_estimated))
        except DATABASE_DOWN as exc:
            # Not even journaled (the outbox is off or could not write): the answer is not given away.
            raise unavailable("record this call") from exc

    def meter_in_background(self, usage: TokenUsage, status: str, http_status: int, *,
                            usage_estimated: bool) -> None:
        """Meter a call whose client went away: the write must finish even though the request task ends."""
        self._start(usage, status, http_status, None, usage_estimated)

    def _start(self, usage: TokenUsage, status: str, http_status: int, error_code: str | None,
               usage_estimated: bool) -> "asyncio.Task[None]":
        self.metered = True
        return self.metering.start(self.record(usage, status, http_status, error_code, usage_estimated))

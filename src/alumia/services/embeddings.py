"""One embeddings call (POST /v1/embeddings): checked, routed, held, sent and metered as a chat call is.

Only what differs from a chat completion lives here: the request's check (services/embedding_request.py),
the adapter (providers/embeddings.py, providers/gemini_embeddings.py) and how the answer's usage is
read. Admission, the route decision, the tariff, the hold and its release, the upstream exchange with
its caps and error mapping, key redaction and metering are the chat path's own (services/proxy.py).

The hold is the call's worst case, `pricing.embedding_reservation`: the request's bytes as input tokens
at the input price, plus the fee when it applies (an embedding model's output limit is 0, so the
shared reservation is exactly that). The charge is the input tokens the provider reported, or the
estimate when it reported none (Gemini), at the input price, never above the hold.
"""

from dataclasses import replace

from alumia.container import Services
from alumia.domain.call_record import Api
from alumia.domain.catalog import Model, Provider
from alumia.domain.estimate import estimate_embedding_input
from alumia.domain.routing import Route
from alumia.domain.tariff import Tariff
from alumia.domain.usage import TokenUsage
from alumia.errors import AppError, ErrorCode
from alumia.providers.embeddings import EmbeddingAdapter
from alumia.services.call import Call, CallOutcome
from alumia.services.embedding_request import EmbeddingRequest, check_for_model, parse_embedding_request
from alumia.services.proxy import route_of, send
from alumia.storage.gateway import CallContext


def _resolve(gw: Services, raw: bytes) -> tuple[EmbeddingRequest, Model, Provider, EmbeddingAdapter]:
    """Check the request and find its model, provider and adapter; nothing here echoes the input."""
    request = parse_embedding_request(raw, gw.request_limits)
    model = gw.catalog.model(request.model)
    if model is None:
        raise AppError(ErrorCode.NOT_FOUND, "the requested model is not in the catalog; see GET /v1/models")
    check_for_model(request, model)
    if model.id != request.model:  # a provider/model alias: the provider is sent its own id
        request = replace(request, model=model.id, body={**request.body, "model": model.id})
    provider = gw.catalog.provider_of(model)
    return request, model, provider, gw.embedders[provider.name]


def _fit(call: Call[EmbeddingRequest], out: bytes,
         reported: TokenUsage | None) -> tuple[bytes, TokenUsage, str, bool]:
    """The answer as it is, and its usage: reported, or estimated from the inputs.

    An embedding cannot be cut to fit its hold; a provider that reports more tokens than the request's
    bytes is charged the hold at most (Call.record).
    """
    if reported is not None:
        return out, reported, "ok", False
    return out, TokenUsage(input_tokens=estimate_embedding_input(call.request.inputs)), "ok", True


async def embed(gw: Services, ctx: CallContext, raw: bytes, request_id: str, started: float) -> CallOutcome:
    """Handle one admitted embeddings request: the answer in OpenAI's CreateEmbeddingResponse shape."""
    request, model, provider, adapter = _resolve(gw, raw)
    byok = ctx.key_for(provider.name)
    decision = route_of(gw, ctx, provider, byok)
    tariff = Tariff(model.prices, gw.fee_policy, ctx.cumulative_deposits_cents,
                    pays=decision.route is Route.PLATFORM)
    call = Call(ctx, model, provider, decision, request, request_id, started, tariff, gw.metering,
                byok if decision.route is Route.BYOK else None, Api.EMBEDDINGS)
    try:
        return await send(gw, call, adapter, raw, _fit)
    except AppError as error:
        error.headers.setdefault("X-Alumia-Route", decision.route.value)
        raise

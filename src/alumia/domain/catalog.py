"""The catalog: the 14 providers, their wire formats, and the models with their list prices."""

import math
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from typing import Any, Literal

WireFormat = Literal["openai", "anthropic", "gemini"]
ModelKind = Literal["chat", "embedding"]
MODEL_KINDS: tuple[str, ...] = ("chat", "embedding")


@dataclass(frozen=True, slots=True)
class Provider:
    """A model provider: how it is spoken and whether the platform offers it for free.

    `limit_field` is the one request field an OpenAI-format provider reads the output limit from
    (`max_tokens` or `max_completion_tokens`); None for the other formats, whose adapters fix it.
    `supports_n` is whether the provider documents `n` (several choices per call); the gateway must
    refuse n > 1 where it does not. `embeddings_base64`: whether its embeddings endpoint returns
    base64 vectors when asked; for the others the gateway asks for floats and encodes them itself.
    `reasoning_effort` is whether an OpenAI-format provider documents
    the `reasoning_effort` field (the Anthropic door's `thinking` maps to it; docs/providers.md
    "Thinking"); the Anthropic and Gemini formats have reasoning controls of their own.
    `features` are the optional chat request features it takes (`CHAT_FEATURES`; providers.toml):
    a request using one it lacks is refused, never sent without it (providers/features.py).
    """

    name: str
    wire_format: WireFormat
    base_url: str
    free: bool
    limit_field: str | None = None
    supports_n: bool = False
    embeddings_base64: bool = False  # its embeddings API answers `encoding_format: base64` itself
    reasoning_effort: bool = False
    features: frozenset[str] = frozenset()

    @property
    def reasoning_control(self) -> str | None:
        """How a `thinking` request reaches this provider: `thinking` (Anthropic's own field),
        `thinking_config` (Gemini's generationConfig.thinkingConfig), `reasoning_effort`, or None."""
        if self.wire_format == "anthropic":
            return "thinking"
        if self.wire_format == "gemini":
            return "thinking_config"
        return "reasoning_effort" if self.reasoning_effort else None


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens.

    `exact` holds the same four prices as integer numerators over one common denominator, so pricing
    a call is integer arithmetic (no Decimal context per call) and stays exact for any Decimal price.
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    exact: tuple[tuple[int, int, int, int], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ratios = [price.as_integer_ratio() for price in (self.input, self.output, self.cached_input,
                                                          self.cache_write)]
        denominator = math.lcm(*(d for _, d in ratios))
        a, b, c, d = (n * (denominator // den) for n, den in ratios)
        object.__setattr__(self, "exact", ((a, b, c, d), denominator))

    def is_zero(self) -> bool:
        """True when every price is zero."""
        return not (self.input or self.output or self.cached_input or self.cache_write)


@dataclass(frozen=True, slots=True)
class Embedding:
    """What an embedding model accepts and returns (models.toml, sourced in docs/providers.md).

    `dimensions` is the length of its vectors by default and `max_dimensions` the most a request may
    ask for; `flexible_dimensions` whether it takes a `dimensions` request field at all; `max_inputs` the most
    inputs one request may carry; `token_input` whether it takes inputs as arrays of token ids (only
    models whose provider tokenises as the client did: OpenAI's).
    """

    dimensions: int
    max_dimensions: int
    flexible_dimensions: bool
    max_inputs: int
    token_input: bool


@dataclass(frozen=True, slots=True)
class Model:
    """A catalog entry; its id is also the id the provider's API knows it by.

    `kind` says which API serves it: "chat" (chat completions and messages) or "embedding"
    (/v1/embeddings, with `embedding` set). An embedding model produces no output tokens: its output
    price and `max_output_tokens` are 0, so a call's worst case is its input alone.
    """

    id: str
    provider: str
    prices: Prices
    max_output_tokens: int
    source: str
    kind: ModelKind = "chat"
    embedding: Embedding | None = None


@dataclass(frozen=True, slots=True)
class Catalog:
    """Providers by name and models by id."""

    providers: dict[str, Provider]
    models: dict[str, Model]

    def model(self, model_id: str) -> Model | None:
        """The model with this id or with this `provider/id` alias, or None.

        Many clients and configs name models `openai/gpt-5.6-luna`. The catalog id wins where both
        could match (some providers' own ids contain a slash, `openai/gpt-oss-20b` among them), and
        an alias resolves only under the model's own provider: `groq/gpt-5.6-luna` is unknown.
        """
        model = self.models.get(model_id)
        if model is None and "/" in model_id:
            provider, _, rest = model_id.partition("/")
            model = self.models.get(rest)
            if model is not None and model.provider != provider:
                return None
        return model

    def provider_of(self, model: Model) -> Provider:
        """The provider a model belongs to."""
        return self.providers[model.provider]


# The optional chat request features a provider may take (docs/providers.md "The OpenAI door"):
# response_format's json_schema and json_object, stop, seed, logprobs (with top_logprobs) and
# parallel_tool_calls set to false.
CHAT_FEATURES = frozenset({"json_schema", "json_object", "stop", "seed", "logprobs", "parallel_tool_calls"})

# The output-limit fields an OpenAI-format provider can read (docs/providers.md "Output limit and n").
OPENAI_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")

PROVIDER_NAMES: tuple[str, ...] = (
    "anthropic", "openai", "gemini", "deepseek", "xai", "mistral", "minimax",
    "moonshot", "zhipu", "xiaomi", "nvidia", "qwen", "cerebras", "groq",
)


def _read_data(name: str) -> dict[str, Any]:
    return tomllib.loads(resources.files("alumia.domain.data").joinpath(name).read_text("utf-8"))


def _provider(name: str, raw: dict[str, Any]) -> Provider:
    """One providers.toml entry; an OpenAI-format provider must name its limit field, others none."""
    limit_field = raw.get("limit_field")
    if raw["wire_format"] == "openai" and limit_field not in OPENAI_LIMIT_FIELDS:
        raise ValueError(f"provider {name}: limit_field must be one of {OPENAI_LIMIT_FIELDS}")
    if raw["wire_format"] != "openai" and (limit_field is not None or "reasoning_effort" in raw):
        raise ValueError(f"provider {name}: only OpenAI-format providers take a limit_field or "
                         "reasoning_effort")
    features = raw.get("features", [])
    if not isinstance(features, list) or not set(features) <= CHAT_FEATURES:
        raise ValueError(f"provider {name}: features must be a list drawn from {sorted(CHAT_FEATURES)}")
    return Provider(name=name, wire_format=raw["wire_format"], base_url=raw["base_url"],
                    free=bool(raw.get("free", False)), limit_field=limit_field,
                    supports_n=bool(raw.get("supports_n", False)),
                    embeddings_base64=bool(raw.get("embeddings_base64", False)),
                    reasoning_effort=bool(raw.get("reasoning_effort", False)),
                    features=frozenset(features))


def _embedding(model_id: str, raw: dict[str, Any]) -> Embedding:
    """An embedding model's own fields; it has no output, so no output price and no output limit."""
    if Decimal(raw.get("output", "0")) or int(raw.get("max_output_tokens", 0)):
        raise ValueError(f"model {model_id}: an embedding model has no output price or output limit")
    spec = Embedding(dimensions=int(raw["dimensions"]),
                     max_dimensions=int(raw.get("max_dimensions", raw["dimensions"])),
                     flexible_dimensions=bool(raw.get("flexible_dimensions", False)),
                     max_inputs=int(raw["max_inputs"]), token_input=bool(raw.get("token_input", False)))
    if not 1 <= spec.dimensions <= spec.max_dimensions or spec.max_inputs < 1:
        raise ValueError(f"model {model_id}: dimensions must be within 1..max_dimensions, "
                         "max_inputs positive")
    return spec


def model_from_toml(raw: dict[str, Any]) -> Model:
    """One models.toml entry."""
    kind = raw.get("kind", "chat")
    if kind not in MODEL_KINDS:
        raise ValueError(f"model {raw['id']}: kind must be one of {MODEL_KINDS}")
    embedding = _embedding(raw["id"], raw) if kind == "embedding" else None
    if embedding is None and int(raw["max_output_tokens"]) < 1:
        raise ValueError(f"model {raw['id']}: a chat model needs a positive max_output_tokens")
    inp = Decimal(raw["input"])
    prices = Prices(
        input=inp,
        output=Decimal(raw.get("output", "0")),
        cached_input=Decimal(raw.get("cached_input", raw["input"])),
        cache_write=Decimal(raw.get("cache_write", raw["input"])),
    )
    return Model(id=raw["id"], provider=raw["provider"], prices=prices,
                 max_output_tokens=int(raw.get("max_output_tokens", 0)), source=raw["source"],
                 kind=kind, embedding=embedding)


def load_catalog() -> Catalog:
    """Load the packaged providers and models, checking that they agree with each other."""
    providers = {name: _provider(name, raw) for name, raw in _read_data("providers.toml").items()}
    if tuple(providers) != PROVIDER_NAMES:
        raise ValueError(f"providers.toml must list exactly {PROVIDER_NAMES}")
    models: dict[str, Model] = {}
    for raw in _read_data("models.toml")["model"]:
        model = model_from_toml(raw)
        prices = model.prices
        if model.provider not in providers:
            raise ValueError(f"model {model.id}: unknown provider {model.provider}")
        if model.id in models:
            raise ValueError(f"model {model.id} listed twice")
        if providers[model.provider].free and not prices.is_zero():
            raise ValueError(f"model {model.id}: a free provider's models must be zero-cost")
        models[model.id] = model
    return Catalog(providers=providers, models=models)

"""The catalog: the 14 providers, their wire formats, and the models with their list prices."""

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Literal

WireFormat = Literal["openai", "anthropic", "gemini"]


@dataclass(frozen=True, slots=True)
class Provider:
    """A model provider: how it is spoken and whether the platform offers it for free."""

    name: str
    wire_format: WireFormat
    base_url: str
    free: bool


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal

    def is_zero(self) -> bool:
        """True when every price is zero."""
        return not (self.input or self.output or self.cached_input or self.cache_write)


@dataclass(frozen=True, slots=True)
class Model:
    """A catalog entry; its id is also the id the provider's API knows it by."""

    id: str
    provider: str
    prices: Prices
    max_output_tokens: int
    source: str


@dataclass(frozen=True, slots=True)
class Catalog:
    """Providers by name and models by id."""

    providers: dict[str, Provider]
    models: dict[str, Model]

    def model(self, model_id: str) -> Model | None:
        """The model with this id, or None."""
        return self.models.get(model_id)

    def provider_of(self, model: Model) -> Provider:
        """The provider a model belongs to."""
        return self.providers[model.provider]


PROVIDER_NAMES: tuple[str, ...] = (
    "anthropic", "openai", "gemini", "deepseek", "xai", "mistral", "minimax",
    "moonshot", "zhipu", "xiaomi", "nvidia", "qwen", "cerebras", "groq",
)


def _read_data(name: str) -> dict:
    return tomllib.loads(resources.files("alumia.domain.data").joinpath(name).read_text("utf-8"))


def load_catalog() -> Catalog:
    """Load the packaged providers and models, checking that they agree with each other."""
    providers = {
        name: Provider(name=name, wire_format=raw["wire_format"], base_url=raw["base_url"],
                       free=bool(raw.get("free", False)))
        for name, raw in _read_data("providers.toml").items()
    }
    if tuple(providers) != PROVIDER_NAMES:
        raise ValueError(f"providers.toml must list exactly {PROVIDER_NAMES}")
    models: dict[str, Model] = {}
    for raw in _read_data("models.toml")["model"]:
        inp = Decimal(raw["input"])
        prices = Prices(
            input=inp,
            output=Decimal(raw["output"]),
            cached_input=Decimal(raw.get("cached_input", raw["input"])),
            cache_write=Decimal(raw.get("cache_write", raw["input"])),
        )
        model = Model(id=raw["id"], provider=raw["provider"], prices=prices,
                      max_output_tokens=int(raw["max_output_tokens"]), source=raw["source"])
        if model.provider not in providers:
            raise ValueError(f"model {model.id}: unknown provider {model.provider}")
        if model.id in models:
            raise ValueError(f"model {model.id} listed twice")
        if providers[model.provider].free and not prices.is_zero():
            raise ValueError(f"model {model.id}: a free provider's models must be zero-cost")
        models[model.id] = model
    return Catalog(providers=providers, models=models)

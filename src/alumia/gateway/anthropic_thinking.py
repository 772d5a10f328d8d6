"""The Anthropic door's `thinking`: checked once, then mapped to the reasoning control of the provider.

Anthropic's own settings (the Messages API reference): `{"type": "enabled", "budget_tokens": N}`
with 1024 <= N < max_tokens, `{"type": "disabled"}`, and `{"type": "adaptive"}` (the model decides how
much to think; no budget), each with an optional `display`. Claude gets them as they are (the native
path, providers/anthropic_native.py). For the other providers (docs/providers.md "Thinking"):

* Gemini: `generationConfig.thinkingConfig`, carried in the OpenAI view the way Google's own
  OpenAI-compatible endpoint takes it, `extra_body.google.thinking_config`: enabled N is
  `thinking_budget` N with `include_thoughts`, adaptive is -1 (Gemini's dynamic thinking), disabled 0.
* OpenAI-format providers that document `reasoning_effort` (`Provider.reasoning_effort`): the budget
  becomes an effort by Google's published mapping between the two (its OpenAI-compatible endpoint
  turns low, medium and high into budgets of 1,024, 8,192 and 24,576 tokens), read backwards: below
  8,192 is low, below 24,576 medium, else high. Adaptive is medium, the level OpenAI documents as its
  reasoning models' default. Disabled sends nothing: not every such provider has a `none`.
* Any other provider: enabled or adaptive is a 400 naming `thinking`; disabled asks for nothing
  that needs a control, and is accepted.

Output limits: thinking is output. Anthropic counts it within max_tokens (hence budget < max_tokens),
Gemini within maxOutputTokens, OpenAI within max_completion_tokens, so the hold, sized for the
output limit at the output price, covers it; a provider that exceeds the limit anyway is cut at
the hold like any other.
"""

from dataclasses import dataclass
from typing import Any

from alumia.domain.catalog import Provider
from alumia.errors import AppError, ErrorCode

MIN_BUDGET_TOKENS = 1024
KINDS = ("enabled", "disabled", "adaptive")
# Google's OpenAI-compatible mapping of reasoning_effort to a thinking budget, read backwards.
EFFORT_BUDGETS = (("low", 1024), ("medium", 8192), ("high", 24576))
ADAPTIVE_EFFORT = "medium"
GEMINI_DYNAMIC_BUDGET = -1


@dataclass(frozen=True, slots=True)
class Thinking:
    """A checked `thinking` setting."""

    kind: str  # one of KINDS
    budget_tokens: int | None = None

    @property
    def on(self) -> bool:
        """Whether the model is asked to think."""
        return self.kind != "disabled"


def _invalid(path: str, what: str) -> AppError:
    return AppError(ErrorCode.VALIDATION_ERROR, f"{path}: {what}")


def parse_thinking(value: Any, max_tokens: int | None) -> Thinking | None:
    """The checked setting, None when absent; VALIDATION_ERROR naming the field for a bad one.

    `max_tokens` is None where the request has none (a token count): the budget is then not held
    against it.
    """
    if value is None:
        return None
    kind = value.get("type") if type(value) is dict else None
    if kind not in KINDS:
        raise _invalid("thinking", "must be {type: enabled, budget_tokens}, {type: adaptive} or "
                                   "{type: disabled}")
    display = value.get("display")
    if display is not None and type(display) is not str:  # its values are Anthropic's to check
        raise _invalid("thinking.display", "must be a string")
    budget = value.get("budget_tokens")
    if kind != "enabled":
        if budget is not None:
            raise _invalid("thinking.budget_tokens", f"is only allowed with type enabled, not {kind}")
        return Thinking(kind)
    ceiling = max_tokens - 1 if max_tokens is not None else None
    if type(budget) is not int or budget < MIN_BUDGET_TOKENS or (ceiling is not None and budget > ceiling):
        bound = f"from {MIN_BUDGET_TOKENS} to max_tokens - 1" if ceiling is not None \
            else f"of at least {MIN_BUDGET_TOKENS}"
        raise _invalid("thinking.budget_tokens", f"must be an integer {bound}")
    return Thinking(kind, budget)


def reasoning_effort(thinking: Thinking) -> str:
    """The `reasoning_effort` for a setting that asks for thinking (the module's mapping)."""
    if thinking.budget_tokens is None:
        return ADAPTIVE_EFFORT
    effort = EFFORT_BUDGETS[0][0]
    for name, budget in EFFORT_BUDGETS:
        if thinking.budget_tokens >= budget:
            effort = name
    return effort


def gemini_budget(thinking: Thinking) -> int:
    """Gemini's thinkingBudget for a setting: the budget, -1 for adaptive, 0 for disabled."""
    if not thinking.on:
        return 0
    return thinking.budget_tokens if thinking.budget_tokens is not None else GEMINI_DYNAMIC_BUDGET


def reasoning_fields(thinking: Thinking | None, provider: Provider) -> dict[str, Any]:
    """The OpenAI-view fields that carry `thinking` to a provider that is not Anthropic's.

    BAD_REQUEST naming `thinking` where the provider has no reasoning control and thinking is asked for.
    """
    if thinking is None:
        return {}
    control = provider.reasoning_control
    if control == "thinking_config":
        config: dict[str, Any] = {"thinking_budget": gemini_budget(thinking)}
        if thinking.on:
            config["include_thoughts"] = True
        return {"extra_body": {"google": {"thinking_config": config}}}
    if not thinking.on:
        return {}
    if control == "reasoning_effort":
        return {"reasoning_effort": reasoning_effort(thinking)}
    if control is None:
        raise AppError(ErrorCode.BAD_REQUEST,
                       f"thinking: {provider.name} has no reasoning control the gateway "
                       "can set; leave thinking out (or send {type: disabled}), or use a model of a "
                       "provider that has one (docs/providers.md \"Thinking\")")
    return {}  # Anthropic's own: sent natively

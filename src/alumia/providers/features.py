"""Whether a chat request's optional features reach its provider: each is sent, or the call is refused.

A field the gateway parsed but a provider cannot take is never dropped on the way: the caller would get
an answer to a question it did not ask (free text for a JSON schema, one choice for n, no thinking for
a reasoning effort) and pay for it. So before anything is held or sent, each feature the request uses
is checked against its provider (`Provider.features`, `supports_n`, `reasoning_control`; sourced in
docs/providers.md "The OpenAI door, feature by feature") and a missing one is a 400 naming the field.

What "uses" means: `response_format` of type json_schema or json_object (text asks for nothing);
a non-empty `stop`; `seed`; `logprobs: true` or any `top_logprobs`; `parallel_tool_calls: false`
(true is every provider's default); `n` above 1; any `reasoning_effort`.
"""

from collections.abc import Mapping
from typing import Any

from alumia.domain.catalog import Provider
from alumia.errors import AppError, ErrorCode
from alumia.providers import anthropic, gemini
from alumia.providers.base import ChatRequest
from alumia.providers.gemini_schema import SchemaRefused, gemini_schema


def _bad(field: str, what: str) -> AppError:
    return AppError(ErrorCode.BAD_REQUEST, f"{field}: {what}")


def used_features(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The optional features a request body uses, as (feature, the field that asks for it)."""
    used: list[tuple[str, str]] = []
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind in ("json_schema", "json_object"):
        used.append((kind, "response_format"))
    if body.get("stop"):
        used.append(("stop", "stop"))
    if body.get("seed") is not None:
        used.append(("seed", "seed"))
    if body.get("logprobs") is True:
        used.append(("logprobs", "logprobs"))
    if body.get("top_logprobs") is not None:
        used.append(("logprobs", "top_logprobs"))
    if body.get("parallel_tool_calls") is False:
        used.append(("parallel_tool_calls", "parallel_tool_calls"))
    return used


def _reasoning_effort(body: Mapping[str, Any], provider: Provider, output_limit: int) -> None:
    effort = body.get("reasoning_effort")
    if effort is None:
        return
    control = provider.reasoning_control
    if control == "thinking":
        _claude_thinking(body, effort, output_limit)
    elif control == "thinking_config":
        if effort not in gemini.EFFORT_BUDGETS:
            raise _bad("reasoning_effort", f"Gemini takes {', '.join(gemini.EFFORT_BUDGETS)}")
    elif control is None:
        raise _bad("reasoning_effort", f"{provider.name} has no reasoning_effort the gateway can send; leave "
                   "it out, or use a model of a provider that has one (docs/providers.md \"Thinking\")")


def _claude_thinking(body: Mapping[str, Any], effort: Any, output_limit: int) -> None:
    """Claude's thinking for an effort: a known effort, room for the smallest budget, no forced tool."""
    if effort not in anthropic.EFFORT_BUDGETS:
        raise _bad("reasoning_effort", f"Claude takes {', '.join(anthropic.EFFORT_BUDGETS)}")
    if effort == "none":
        return
    if output_limit <= anthropic.MIN_THINKING_BUDGET:
        raise _bad("reasoning_effort", f"Claude thinks within max_tokens, which must then be above "
                   f"{anthropic.MIN_THINKING_BUDGET}; raise max_completion_tokens or leave "
                   "reasoning_effort out")
    # Anthropic refuses thinking with a forced tool call or a changed temperature; say so here, by name.
    choice = body.get("tool_choice")
    if choice == "required" or isinstance(choice, Mapping) or anthropic.json_tool_wanted(body):
        raise _bad("reasoning_effort", "Claude cannot think while a tool call is forced (tool_choice "
                   "required or named, or response_format json_object); leave one of them out")
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise _bad("temperature", "Claude takes no temperature but 1 while it thinks (reasoning_effort)")


def _response_format(body: Mapping[str, Any], provider: Provider) -> None:
    """The provider-specific limits of a response_format the provider takes."""
    response_format = body.get("response_format")
    if not isinstance(response_format, Mapping):
        return
    if provider.wire_format == "anthropic" and anthropic.json_tool_wanted(body) and body.get("tools"):
        raise _bad("response_format", "json_object on Claude is answered through a tool of the gateway's "
                   "own, which cannot stand beside the request's tools; use json_schema instead")
    schema = (response_format.get("json_schema") or {}).get("schema")
    if provider.wire_format == "gemini" and response_format.get("type") == "json_schema" \
            and schema is not None:
        try:
            gemini_schema(schema)
        except SchemaRefused as refused:
            raise _bad(f"response_format.json_schema.schema{refused.path}", refused.what) from None


def check_features(request: ChatRequest, provider: Provider, output_limit: int) -> None:
    """Refuse with BAD_REQUEST, naming the field, a request using what `provider` cannot take.

    `output_limit` is the call's output limit (the client's or the model's), within which Claude's
    thinking budget must stay.
    """
    if request.choices > 1 and not provider.supports_n:
        # Sent anyway, one answer would come back for n held; dropped silently, the caller would wait
        # for choices that never come.
        raise _bad("n", f"{provider.name} does not support n > 1; ask for one choice per call, or use a "
                   "model of a provider that supports n")
    body = request.body
    for feature, field in used_features(body):
        if feature not in provider.features:
            raise _bad(field, f"{provider.name} does not take {_described(feature)}; leave it out, or use a "
                       "model of a provider that does (docs/providers.md \"The OpenAI door\")")
    _response_format(body, provider)
    _reasoning_effort(body, provider, output_limit)


def _described(feature: str) -> str:
    return {"json_schema": "response_format json_schema", "json_object": "response_format json_object",
            "parallel_tool_calls": "parallel_tool_calls false", "logprobs": "logprobs"}.get(feature, feature)

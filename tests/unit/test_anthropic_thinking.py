"""The Anthropic door's `thinking`: its checks, and what each provider is sent for it."""

import orjson
import pytest

from alumia.domain.catalog import load_catalog
from alumia.errors import AppError
from alumia.gateway.anthropic_thinking import Thinking, parse_thinking, reasoning_effort, reasoning_fields
from alumia.providers.base import ChatRequest
from alumia.providers.gemini import GeminiAdapter

CATALOG = load_catalog()


def provider(name: str):  # type: ignore[no-untyped-def]
    return CATALOG.providers[name]


@pytest.mark.parametrize(("value", "expected"), [
    (None, None),
    ({"type": "enabled", "budget_tokens": 1024}, Thinking("enabled", 1024)),
    ({"type": "enabled", "budget_tokens": 1999}, Thinking("enabled", 1999)),
    ({"type": "adaptive"}, Thinking("adaptive")),
    ({"type": "adaptive", "display": "omitted"}, Thinking("adaptive")),
    ({"type": "disabled"}, Thinking("disabled")),
])
def test_settings_anthropic_accepts_are_accepted(value: object, expected: Thinking | None) -> None:
    assert parse_thinking(value, 2000) == expected


@pytest.mark.parametrize(("value", "path"), [
    ("on", "thinking"),
    ({"type": "sometimes"}, "thinking"),
    ({"type": "enabled"}, "thinking.budget_tokens"),
    ({"type": "enabled", "budget_tokens": 1023}, "thinking.budget_tokens"),
    ({"type": "enabled", "budget_tokens": 2000}, "thinking.budget_tokens"),  # not below max_tokens
    ({"type": "enabled", "budget_tokens": True}, "thinking.budget_tokens"),
    ({"type": "adaptive", "budget_tokens": 1024}, "thinking.budget_tokens"),
    ({"type": "enabled", "budget_tokens": 1024, "display": 3}, "thinking.display"),
])
def test_a_bad_setting_is_a_422_naming_its_field(value: object, path: str) -> None:
    with pytest.raises(AppError) as raised:
        parse_thinking(value, 2000)
    assert raised.value.status == 422 and raised.value.message.startswith(f"{path}: ")


def test_a_count_request_has_no_max_tokens_to_hold_the_budget_against() -> None:
    assert parse_thinking({"type": "enabled", "budget_tokens": 50_000}, None) == Thinking("enabled", 50_000)


@pytest.mark.parametrize(("thinking", "effort"), [
    (Thinking("enabled", 1024), "low"),
    (Thinking("enabled", 8191), "low"),
    (Thinking("enabled", 8192), "medium"),
    (Thinking("enabled", 24575), "medium"),
    (Thinking("enabled", 24576), "high"),
    (Thinking("enabled", 60_000), "high"),
    (Thinking("adaptive"), "medium"),
])
def test_the_budget_becomes_an_effort_by_googles_mapping_read_backwards(thinking: Thinking,
                                                                        effort: str) -> None:
    assert reasoning_effort(thinking) == effort


@pytest.mark.parametrize("name", ["openai", "xai", "groq", "cerebras"])
def test_providers_with_reasoning_effort_get_it(name: str) -> None:
    assert reasoning_fields(Thinking("enabled", 10_000), provider(name)) == {"reasoning_effort": "medium"}
    assert reasoning_fields(Thinking("disabled"), provider(name)) == {}


@pytest.mark.parametrize(("thinking", "config"), [
    (Thinking("enabled", 3000), {"thinking_budget": 3000, "include_thoughts": True}),
    (Thinking("adaptive"), {"thinking_budget": -1, "include_thoughts": True}),
    (Thinking("disabled"), {"thinking_budget": 0}),
])
def test_gemini_gets_a_thinking_budget_as_its_openai_endpoint_takes_it(thinking: Thinking,
                                                                        config: dict) -> None:
    expected = {"extra_body": {"google": {"thinking_config": config}}}
    assert reasoning_fields(thinking, provider("gemini")) == expected


@pytest.mark.parametrize("name", ["mistral", "deepseek", "minimax", "moonshot", "zhipu", "xiaomi", "nvidia",
                                  "qwen"])
def test_a_provider_without_a_reasoning_control_refuses_thinking_with_a_400(name: str) -> None:
    for asked in (Thinking("enabled", 2048), Thinking("adaptive")):
        with pytest.raises(AppError) as raised:
            reasoning_fields(asked, provider(name))
        assert raised.value.status == 400 and raised.value.code == "BAD_REQUEST"
        assert raised.value.message.startswith(f"thinking: {name} has no reasoning control")
    assert reasoning_fields(Thinking("disabled"), provider(name)) == {}  # nothing to switch off
    assert reasoning_fields(None, provider(name)) == {}


def gemini_config(body: dict) -> dict:
    body = {"model": "gemini-3.7-flash", "messages": [{"role": "user", "content": "hi"}], **body}
    request = ChatRequest(raw=orjson.dumps(body), body=body, model=body["model"], stream=False,
                          include_usage=False, max_output_tokens=None)
    sent = GeminiAdapter().build("https://g.test/v1beta", request, "AIza-test", 4000)
    return orjson.loads(sent.body)["generationConfig"]


def test_the_gemini_adapter_sends_the_thinking_config_in_generation_config() -> None:
    config = gemini_config({"extra_body": {"google": {"thinking_config": {
        "thinking_budget": 3000, "include_thoughts": True}}}})
    assert config == {"maxOutputTokens": 4000,
                      "thinkingConfig": {"thinkingBudget": 3000, "includeThoughts": True}}


@pytest.mark.parametrize(("effort", "budget"),
                         [("none", 0), ("low", 1024), ("medium", 8192), ("high", 24576)])
def test_the_gemini_adapter_maps_reasoning_effort_as_google_does(effort: str, budget: int) -> None:
    assert gemini_config({"reasoning_effort": effort})["thinkingConfig"] == {"thinkingBudget": budget}


def test_the_gemini_adapter_sends_no_thinking_config_unless_asked() -> None:
    assert "thinkingConfig" not in gemini_config({})

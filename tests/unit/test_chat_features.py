"""The OpenAI door's optional features, as pure translations: which provider takes which (a 400 naming the
field otherwise), Claude's structured outputs, JSON tool and thinking budgets, Gemini's schema subset,
candidates and logprobs."""

from typing import Any

import orjson
import pytest

from alumia.domain.catalog import load_catalog
from alumia.errors import AppError
from alumia.providers.anthropic import AnthropicStreamTranslator, completion, request_body
from alumia.providers.base import ChatRequest
from alumia.providers.features import check_features, used_features
from alumia.providers.gemini import GeminiAdapter, GeminiStreamTranslator
from alumia.providers.gemini_schema import SchemaRefused, gemini_schema

CATALOG = load_catalog()
MESSAGES = [{"role": "user", "content": "hi"}]


def chat(choices: int = 1, stream: bool = False, **fields: Any) -> ChatRequest:
    body = {"model": "m", "messages": MESSAGES, **fields}
    return ChatRequest(raw=orjson.dumps(body), body=body, model="m", stream=stream, include_usage=False,
                       max_output_tokens=None, choices=choices)


def refused(provider: str, request: ChatRequest, limit: int = 4096) -> str:
    with pytest.raises(AppError) as info:
        check_features(request, CATALOG.providers[provider], limit)
    assert info.value.code == "BAD_REQUEST"
    return info.value.message


def test_used_features_are_read_from_the_body() -> None:
    body = {"response_format": {"type": "json_schema"}, "stop": "x", "seed": 0, "logprobs": True,
            "top_logprobs": 1, "parallel_tool_calls": False}
    assert used_features(body) == [("json_schema", "response_format"), ("stop", "stop"), ("seed", "seed"),
                                   ("logprobs", "logprobs"), ("logprobs", "top_logprobs"),
                                   ("parallel_tool_calls", "parallel_tool_calls")]
    # The defaults ask for nothing.
    assert used_features({"response_format": {"type": "text"}, "stop": [], "logprobs": False,
                          "parallel_tool_calls": True}) == []


@pytest.mark.parametrize(("provider", "fields", "field"), [
    ("anthropic", {"seed": 1}, "seed"), ("anthropic", {"logprobs": True}, "logprobs"),
    ("gemini", {"parallel_tool_calls": False}, "parallel_tool_calls"),
    ("groq", {"top_logprobs": 3}, "top_logprobs"), ("minimax", {"stop": "x"}, "stop"),
    ("deepseek", {"response_format": {"type": "json_schema", "json_schema": {"name": "n"}}},
     "response_format"),
    ("mistral", {"reasoning_effort": "low"}, "reasoning_effort"),
    ("gemini", {"reasoning_effort": "max"}, "reasoning_effort"),
    ("anthropic", {"reasoning_effort": "turbo"}, "reasoning_effort"),
    ("anthropic", {"reasoning_effort": "low", "tool_choice": "required"}, "reasoning_effort"),
    ("anthropic", {"reasoning_effort": "low", "temperature": 0.2}, "temperature"),
])
def test_a_feature_the_provider_lacks_is_a_400_naming_the_field(provider: str, fields: dict[str, Any],
                                                                field: str) -> None:
    assert refused(provider, chat(**fields)).startswith(f"{field}: ")


def test_n_is_refused_by_name_where_it_is_not_honoured_and_taken_by_gemini() -> None:
    assert refused("anthropic", chat(choices=2)).startswith("n: anthropic does not support n > 1")
    check_features(chat(choices=2), CATALOG.providers["gemini"], 100)


def test_claude_needs_room_for_the_smallest_thinking_budget() -> None:
    assert refused("anthropic", chat(reasoning_effort="minimal"), limit=1024).startswith("reasoning_effort: ")
    check_features(chat(reasoning_effort="minimal"), CATALOG.providers["anthropic"], 1025)
    check_features(chat(reasoning_effort="none", temperature=0.2), CATALOG.providers["anthropic"], 10)


@pytest.mark.parametrize(("effort", "limit", "thinking"), [
    ("none", 4096, {"type": "disabled"}), ("minimal", 4096, {"type": "enabled", "budget_tokens": 1024}),
    ("medium", 4096, {"type": "enabled", "budget_tokens": 4095}),
    ("high", 64000, {"type": "enabled", "budget_tokens": 24576}),
    ("max", 64000, {"type": "enabled", "budget_tokens": 63999})])
def test_reasoning_effort_is_a_thinking_budget_below_max_tokens(effort: str, limit: int,
                                                               thinking: dict[str, Any]) -> None:
    assert request_body(chat(reasoning_effort=effort), limit)["thinking"] == thinking


def test_a_json_schema_is_claudes_structured_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    body = request_body(chat(response_format={"type": "json_schema",
                                              "json_schema": {"name": "n", "schema": schema}}), 100)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "tools" not in body and "tool_choice" not in body


def test_json_object_is_the_gateways_tool_and_its_input_comes_back_as_content() -> None:
    request = chat(response_format={"type": "json_object"})
    body = request_body(request, 100)
    assert body["tool_choice"] == {"type": "tool", "name": "json_answer", "disable_parallel_tool_use": True}
    assert body["tools"] == [{"name": "json_answer", "description": "Answer with a JSON object.",
                              "input_schema": {"type": "object"}}]
    message = {"id": "m", "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 2},
               "content": [{"type": "tool_use", "id": "t", "name": "json_answer", "input": {"k": [1]}}]}
    out, _usage = completion(message, request)
    assert out["choices"][0]["message"] == {"role": "assistant", "content": '{"k":[1]}', "refusal": None}
    assert out["choices"][0]["finish_reason"] == "stop"


def _events(*events: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(event) for event in events]


def _json_delta(fragment: str) -> dict[str, str]:
    return {"type": "input_json_delta", "partial_json": fragment}


def test_a_streamed_json_tool_call_is_content_deltas() -> None:
    translator = AnthropicStreamTranslator(chat(stream=True, response_format={"type": "json_object"}))
    frames = [frame for payload in _events(
        {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "t", "name": "json_answer", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": _json_delta('{"k"')},
        {"type": "content_block_delta", "index": 0, "delta": _json_delta(":1}")},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
        {"type": "message_stop"}) for frame in translator.feed(payload)]
    chunks = [orjson.loads(frame[6:]) for frame in frames]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert "".join(d.get("content", "") for d in deltas) == '{"k":1}'
    assert not any("tool_calls" in d for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_gemini_takes_its_documented_schema_subset_and_refuses_the_rest() -> None:
    schema = {"$schema": "x", "type": "object", "title": "T", "additionalProperties": False,
              "properties": {"kind": {"const": "a"}, "n": {"type": "integer", "minimum": 1, "default": 2},
                             "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}, "maxItems": 3}},
              "$defs": {"Tag": {"anyOf": [{"type": "string", "enum": ["x", "y"]}, {"type": "null"}]}},
              "required": ["kind"]}
    assert gemini_schema(schema) == {
        "type": "object", "title": "T", "additionalProperties": False,
        "properties": {"kind": {"enum": ["a"]}, "n": {"type": "integer", "minimum": 1},
                       "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}, "maxItems": 3}},
        "$defs": {"Tag": {"anyOf": [{"type": "string", "enum": ["x", "y"]}, {"type": "null"}]}},
        "required": ["kind"]}
    for bad, path in [({"type": "string", "pattern": "a"}, ".pattern"),
                      ({"properties": {"a": {"allOf": []}}}, ".properties.a.allOf"),
                      ({"items": {"enum": [True]}}, ".items.enum"),
                      ({"anyOf": [{"not": {}}]}, ".anyOf[0].not")]:
        with pytest.raises(SchemaRefused) as info:
            gemini_schema(bad)
        assert info.value.path == path


def _gemini_body(request: ChatRequest) -> dict[str, Any]:
    built = GeminiAdapter().build("https://g", request, "k", 50)
    body: dict[str, Any] = orjson.loads(built.body)
    return body


def test_gemini_is_asked_for_candidates_logprobs_and_json() -> None:
    schema = {"type": "object", "properties": {"a": {"const": 1}}}
    config = _gemini_body(chat(choices=3, logprobs=True, top_logprobs=4, seed=9, stop=["x"], response_format={
        "type": "json_schema", "json_schema": {"name": "n", "schema": schema}}))["generationConfig"]
    assert config == {"maxOutputTokens": 50, "candidateCount": 3, "responseLogprobs": True, "logprobs": 4,
                      "seed": 9, "stopSequences": ["x"], "responseMimeType": "application/json",
                      "responseJsonSchema": {"type": "object", "properties": {"a": {"enum": [1]}}}}
    assert "candidateCount" not in _gemini_body(chat())["generationConfig"]


def _candidate(index: int, text: str, finish: str | None = "STOP") -> dict[str, Any]:
    candidate: dict[str, Any] = {"index": index, "content": {"role": "model", "parts": [{"text": text}]}}
    if finish:
        candidate["finishReason"] = finish
    return candidate


def test_every_gemini_candidate_is_a_choice_with_its_logprobs() -> None:
    first = {**_candidate(0, "Hi there"), "logprobsResult": {
        "chosenCandidates": [{"token": "Hi", "logProbability": -0.5},
                             {"token": " there", "logProbability": -1}],
        "topCandidates": [{"candidates": [{"token": "Hi", "logProbability": -0.5},
                                          {"token": "Yo", "logProbability": -2}]}]}}
    answer = {"candidates": [_candidate(1, "B", "MAX_TOKENS"), first],
              "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 3}}
    out, usage = GeminiAdapter().parse_response(orjson.dumps(answer), chat(choices=2))
    choices = orjson.loads(out)["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "Hi there", "stop"), (1, "B", "length")]
    assert choices[0]["logprobs"]["content"] == [
        {"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
         "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
                          {"token": "Yo", "logprob": -2.0, "bytes": [89, 111]}]},
        {"token": " there", "logprob": -1.0, "bytes": list(b" there"), "top_logprobs": []}]
    assert choices[1]["logprobs"] is None
    assert usage is not None and usage.output_tokens == 3


def test_a_gemini_stream_ends_once_every_candidate_has_finished() -> None:
    translator = GeminiStreamTranslator(chat(choices=2, stream=True))
    frames = translator.feed(orjson.dumps({"candidates": [_candidate(0, "a")]}))
    assert not translator.finished
    frames += translator.feed(orjson.dumps({"candidates": [_candidate(1, "b", None)]}))
    frames += translator.feed(orjson.dumps({"candidates": [_candidate(1, " c")]}))
    assert translator.finished
    choices = [orjson.loads(frame[6:])["choices"][0] for frame in frames]
    assert [(c["index"], c["delta"].get("content"), c["finish_reason"]) for c in choices] == [
        (0, "a", None), (0, None, "stop"), (1, "b", None), (1, " c", None), (1, None, "stop")]
    assert [c["delta"].get("role") for c in choices] == ["assistant", None, "assistant", None, None]

"""The Gemini adapter: OpenAI requests out, GenerateContentResponse (and its SSE chunks) back, errors."""

import secrets
from typing import Any

import orjson
import pytest

from alumia.domain.usage import TokenUsage
from alumia.providers.base import ChatRequest
from alumia.providers.gemini import GeminiAdapter

import conformance

BASE = "https://generativelanguage.googleapis.com/v1beta"
KEY = "AIza" + "Test" + secrets.token_hex(16)  # shaped like a Gemini key, fake, built at run time
MODEL = "gemini-3.7-flash"
ADAPTER = GeminiAdapter()


def chat(body: dict[str, Any], *, stream: bool = False, include_usage: bool = False) -> ChatRequest:
    body = {"model": MODEL, **body}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return ChatRequest(raw=orjson.dumps(body), body=body, model=body["model"], stream=stream,
                       include_usage=include_usage, max_output_tokens=limit)


def built(body: dict[str, Any], *, stream: bool = False, limit: int = 65536) -> dict[str, Any]:
    return orjson.loads(ADAPTER.build(BASE, chat(body, stream=stream), KEY, limit).body)


def respond(gemini: dict[str, Any], request: ChatRequest | None = None) -> tuple[dict, TokenUsage]:
    out, usage = ADAPTER.parse_response(orjson.dumps(gemini), request or chat({"messages": []}))
    body = orjson.loads(out)
    conformance.validate("CreateChatCompletionResponse", body)
    return body, usage


def candidate(parts: list[dict], reason: str | None = "STOP") -> dict[str, Any]:
    out: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if reason:
        out["finishReason"] = reason
    return out


def frames_of(raw: list[bytes]) -> list[dict]:
    out = []
    for frame in raw:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        out.append(orjson.loads(frame[6:-2]))
    return out


def run_stream(chunks: list[dict], *, include_usage: bool = False):
    translator = ADAPTER.stream_translator(chat({"messages": []}, stream=True, include_usage=include_usage))
    frames = []
    for chunk in chunks:
        frames += frames_of(translator.feed(orjson.dumps(chunk)))
    frames += frames_of(translator.close())
    for frame in frames:
        if "error" not in frame:
            conformance.validate("CreateChatCompletionStreamResponse", frame)
    return translator, frames


# --- request ---------------------------------------------------------------------------------------


def test_urls_for_both_modes_and_the_key_only_in_its_header() -> None:
    plain = ADAPTER.build(BASE, chat({"messages": [{"role": "user", "content": "hi"}]}), KEY, 100)
    streamed = ADAPTER.build(BASE, chat({"messages": [{"role": "user", "content": "hi"}]}, stream=True),
                             KEY, 100)
    assert plain.url == f"{BASE}/models/{MODEL}:generateContent"
    assert streamed.url == f"{BASE}/models/{MODEL}:streamGenerateContent?alt=sse"
    for upstream in (plain, streamed):
        assert upstream.headers == {"x-goog-api-key": KEY, "content-type": "application/json"}
        assert KEY not in upstream.url and "key=" not in upstream.url
        assert KEY.encode() not in upstream.body


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    body = built({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
    ]})
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_roles_map_and_consecutive_same_role_turns_merge() -> None:
    body = built({"messages": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "five"},
    ]})
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}, {"text": "four"}]},
        {"role": "user", "parts": [{"text": "five"}]},
    ]
    assert "systemInstruction" not in body and "tools" not in body and "toolConfig" not in body


def test_tool_calls_and_results_with_the_name_looked_up_by_id() -> None:
    body = built({"messages": [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "clock", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "noon"}]},
        {"role": "tool", "tool_call_id": "call_unknown", "content": "?"},
    ]}, stream=False)
    model_turn, results = body["contents"][1], body["contents"][2]
    assert model_turn["role"] == "model"
    assert [p["functionCall"] for p in model_turn["parts"]] == [
        {"name": "weather", "args": {"city": "Paris"}}, {"name": "clock", "args": {}}]
    assert results == {"role": "user", "parts": [
        {"functionResponse": {"name": "weather", "response": {"output": "18C"}}},
        {"functionResponse": {"name": "clock", "response": {"output": "noon"}}},
        {"functionResponse": {"name": "call_unknown", "response": {"output": "?"}}},
    ]}
    assert len(body["contents"]) == 3


def test_a_thought_signature_round_trips_through_the_tool_call_id() -> None:
    signature = "Cv8BAb4+9vv/dGhvdWdodA=="
    answer, _ = respond({"candidates": [candidate(
        [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": signature}])]})
    call = answer["choices"][0]["message"]["tool_calls"][0]
    assert call["id"].startswith("call_")
    assert set(call["id"]) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    body = built({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C"},
    ]})
    assert body["contents"][1]["parts"] == [
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": signature}]
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "weather"


def test_calls_without_a_signature_get_the_placeholder_on_gemini_3_only() -> None:
    messages = [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}]
    parts = built({"messages": messages})["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in parts[1]
    old = built({"model": "gemini-2.5-flash", "messages": messages})["contents"][1]["parts"]
    assert all("thoughtSignature" not in part for part in old)


def test_arguments_that_are_not_a_json_object_are_kept_as_a_string() -> None:
    body = built({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]})
    assert body["contents"][0]["parts"][0]["functionCall"]["args"] == {"arguments": "not json"}


def test_images_inline_and_by_url() -> None:
    body = built({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
    ]}]})
    assert body["contents"][0]["parts"] == [
        {"text": "compare"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "https://example.com/cat.webp?size=2", "mimeType": "image/webp"}},
        {"fileData": {"fileUri": "https://example.com/render", "mimeType": "image/jpeg"}},
    ]


TOOLS = [{"type": "function", "function": {
    "name": "weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}]


@pytest.mark.parametrize(("choice", "config"), [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["weather"]}),
])
def test_tools_and_each_tool_choice(choice: Any, config: dict) -> None:
    body = built({"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": choice})
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "weather", "description": "Current weather",
        "parametersJsonSchema": TOOLS[0]["function"]["parameters"]}]}]
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_without_tool_choice_there_is_no_tool_config() -> None:
    body = built({"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS})
    assert "toolConfig" not in body and len(body["tools"][0]["functionDeclarations"]) == 1


def test_generation_config_with_a_client_limit() -> None:
    body = built({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 256, "temperature": 0.2,
                  "top_p": 0.9, "stop": "END"}, limit=256)
    assert body["generationConfig"] == {"maxOutputTokens": 256, "temperature": 0.2, "topP": 0.9,
                                        "stopSequences": ["END"]}
    body = built({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 64,
                  "stop": ["a", "b"]}, limit=64)
    assert body["generationConfig"] == {"maxOutputTokens": 64, "stopSequences": ["a", "b"]}


def test_max_output_tokens_is_the_held_limit_even_when_the_client_set_none() -> None:
    # The hold is sized for the model's limit; Gemini's own default must never apply instead.
    body = built({"messages": [{"role": "user", "content": "hi"}]}, limit=65536)
    assert body["generationConfig"] == {"maxOutputTokens": 65536}
    body = built({"messages": [{"role": "user", "content": "hi"}], "temperature": 1}, limit=65536)
    assert body["generationConfig"] == {"maxOutputTokens": 65536, "temperature": 1}


def test_only_the_held_limit_is_sent_and_n_is_not_mapped() -> None:
    body = built({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 1,
                  "max_tokens": 2064, "n": 3}, limit=1)
    assert body["generationConfig"] == {"maxOutputTokens": 1}
    assert b"2064" not in orjson.dumps(body) and b"candidateCount" not in orjson.dumps(body)


def test_response_formats() -> None:
    json_object = built({"messages": [{"role": "user", "content": "hi"}],
                         "response_format": {"type": "json_object"}})
    assert json_object["generationConfig"] == {"maxOutputTokens": 65536,
                                               "responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    json_schema = built({"messages": [{"role": "user", "content": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}})
    assert json_schema["generationConfig"] == {"maxOutputTokens": 65536,
                                               "responseMimeType": "application/json",
                                               "responseJsonSchema": schema}
    text = built({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}})
    assert text["generationConfig"] == {"maxOutputTokens": 65536}


# --- response --------------------------------------------------------------------------------------


def test_a_text_answer() -> None:
    body, usage = respond({"candidates": [candidate([{"text": "Hello, "}, {"text": "world."}])],
                           "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3,
                                             "totalTokenCount": 8},
                           "modelVersion": MODEL, "responseId": "abc123"})
    assert body["id"] == "chatcmpl-abc123" and body["object"] == "chat.completion"
    assert body["model"] == MODEL and isinstance(body["created"], int)
    message = {"role": "assistant", "content": "Hello, world.", "refusal": None}
    assert body["choices"] == [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": message}]
    assert usage == TokenUsage(input_tokens=5, output_tokens=3)


def test_thought_parts_become_reasoning_content() -> None:
    parts = [{"text": "Let me think.", "thought": True}, {"text": "42"}]
    body, _ = respond({"candidates": [candidate(parts)]})
    message = body["choices"][0]["message"]
    assert message["content"] == "42" and message["reasoning_content"] == "Let me think."


def test_function_calls_get_generated_ids_and_compact_arguments() -> None:
    body, _ = respond({"candidates": [candidate([
        {"functionCall": {"name": "weather", "args": {"city": "Paris", "units": "c"}}},
        {"functionCall": {"name": "weather", "args": {"city": "Rome"}, "id": "gem-id-1"}},
    ])]})
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first["id"].startswith("call_") and len(first["id"]) > len("call_")
    assert first["type"] == "function"
    assert first["function"] == {"name": "weather", "arguments": '{"city":"Paris","units":"c"}'}
    assert second["id"] == "gem-id-1"
    again, _ = respond({"candidates": [candidate([{"functionCall": {"name": "f", "args": {}}}])]})
    assert again["choices"][0]["message"]["tool_calls"][0]["id"] != first["id"]


@pytest.mark.parametrize(("reason", "expected"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"),
    ("SAFETY", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("BLOCKLIST", "content_filter"),
    ("SPII", "content_filter"), ("LANGUAGE", "content_filter"), ("IMAGE_SAFETY", "content_filter"),
    ("MALFORMED_FUNCTION_CALL", "stop"), ("UNEXPECTED_TOOL_CALL", "stop"), ("TOO_MANY_TOOL_CALLS", "stop"),
    ("RECITATION", "content_filter"), ("OTHER", "stop"), ("SOMETHING_NEW", "stop"),
])
def test_finish_reasons(reason: str, expected: str) -> None:
    body, _ = respond({"candidates": [candidate([{"text": "x"}], reason)]})
    assert body["choices"][0]["finish_reason"] == expected


def test_a_blocked_prompt() -> None:
    body, usage = respond({"promptFeedback": {"blockReason": "SAFETY"},
                           "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}})
    choice = body["choices"][0]
    assert choice["message"]["content"] is None and choice["finish_reason"] == "content_filter"
    assert usage == TokenUsage(input_tokens=12)


FULL_USAGE = {"promptTokenCount": 1000, "toolUsePromptTokenCount": 10, "cachedContentTokenCount": 600,
              "candidatesTokenCount": 50, "thoughtsTokenCount": 30, "totalTokenCount": 1090}


def test_exact_usage_with_tool_prompt_cache_and_thoughts() -> None:
    body, usage = respond({"candidates": [candidate([{"text": "ok"}])], "usageMetadata": FULL_USAGE})
    assert body["usage"] == {"prompt_tokens": 1010, "completion_tokens": 80, "total_tokens": 1090,
                             "prompt_tokens_details": {"cached_tokens": 600},
                             "completion_tokens_details": {"reasoning_tokens": 30}}
    assert usage == TokenUsage(input_tokens=410, output_tokens=80, cache_read_tokens=600, reasoning_tokens=30)


# --- stream ----------------------------------------------------------------------------------------


def test_a_realistic_text_stream() -> None:
    chunks = [
        {"candidates": [candidate([{"text": "The quick"}], None)],
         "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 2, "totalTokenCount": 22},
         "modelVersion": MODEL, "responseId": "r1"},
        {"candidates": [candidate([{"text": " brown fox"}], None)],
         "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 4, "totalTokenCount": 24},
         "modelVersion": MODEL, "responseId": "r1"},
        {"candidates": [candidate([{"text": " jumps."}], "STOP")],
         "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 6, "thoughtsTokenCount": 9,
                           "cachedContentTokenCount": 8, "totalTokenCount": 35},
         "modelVersion": MODEL, "responseId": "r1"},
    ]
    translator, frames = run_stream(chunks, include_usage=True)
    assert translator.finished
    assert translator.usage == TokenUsage(input_tokens=12, output_tokens=15, cache_read_tokens=8,
                                          reasoning_tokens=9)
    assert all(f["id"] == "chatcmpl-r1" and f["object"] == "chat.completion.chunk" for f in frames)
    assert frames[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in f["choices"][0]["delta"] for f in frames[1:] if f["choices"])
    content = "".join(f["choices"][0]["delta"].get("content", "") for f in frames if f["choices"])
    assert content == "The quick brown fox jumps."
    finishes = [f["choices"][0]["finish_reason"] for f in frames if f["choices"]]
    assert finishes == [None, None, None, "stop"]
    assert all(f["usage"] is None for f in frames[:-1])
    assert frames[-1]["choices"] == []
    assert frames[-1]["usage"] == {"prompt_tokens": 20, "completion_tokens": 15, "total_tokens": 35,
                                   "prompt_tokens_details": {"cached_tokens": 8},
                                   "completion_tokens_details": {"reasoning_tokens": 9}}


def test_without_include_usage_chunks_have_no_usage_and_close_sends_nothing() -> None:
    translator, frames = run_stream([{"candidates": [candidate([{"text": "hi"}])],
                                      "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}}])
    assert all("usage" not in f for f in frames)
    assert translator.close() == []
    assert translator.usage == TokenUsage(input_tokens=3, output_tokens=1)


def test_a_function_call_stream_ends_with_tool_calls() -> None:
    chunks = [
        {"candidates": [candidate([{"text": "thinking", "thought": True}], None)]},
        {"candidates": [candidate([{"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                                   {"functionCall": {"name": "clock", "args": {}}}], None)]},
        {"candidates": [candidate([{"functionCall": {"name": "weather", "args": {"city": "Rome"}}}], "STOP")],
         "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 12}},
    ]
    translator, frames = run_stream(chunks)
    deltas = [f["choices"][0]["delta"] for f in frames]
    assert deltas[0] == {"role": "assistant", "reasoning_content": "thinking"}
    calls = [call for delta in deltas for call in delta.get("tool_calls", [])]
    assert [c["index"] for c in calls] == [0, 1, 2]
    assert [c["function"] for c in calls] == [
        {"name": "weather", "arguments": '{"city":"Paris"}'}, {"name": "clock", "arguments": "{}"},
        {"name": "weather", "arguments": '{"city":"Rome"}'}]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == 3
    assert frames[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.finished and translator.usage == TokenUsage(input_tokens=40, output_tokens=12)


def test_a_blocked_prompt_in_a_stream() -> None:
    translator, frames = run_stream([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                      "usageMetadata": {"promptTokenCount": 7}}])
    assert [f["choices"][0]["finish_reason"] for f in frames] == ["content_filter"]
    assert frames[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert translator.finished and translator.usage == TokenUsage(input_tokens=7)


def test_an_error_payload_becomes_an_in_band_error_frame() -> None:
    translator = ADAPTER.stream_translator(chat({"messages": []}, stream=True))
    translator.feed(orjson.dumps({"candidates": [candidate([{"text": "par"}], None)]}))
    error = {"error": {"code": 503, "message": f"The model is overloaded (key {KEY}).",
                       "status": "UNAVAILABLE"}}
    frames = translator.feed(orjson.dumps(error))
    assert len(frames) == 1 and frames[0].startswith(b"data: ") and frames[0].endswith(b"\n\n")
    assert KEY.encode() not in frames[0]
    body = orjson.loads(frames[0][6:])
    assert body == {"error": {"message": "The model is overloaded (key [redacted]).", "type": "api_error",
                              "param": None, "code": "UNAVAILABLE"}}
    assert not translator.finished


def test_an_unreadable_payload_is_skipped() -> None:
    translator = ADAPTER.stream_translator(chat({"messages": []}, stream=True))
    assert translator.feed(b"{not json") == []
    assert translator.usage is None and not translator.finished and translator.close() == []


# --- errors ----------------------------------------------------------------------------------------


def error_body(code: int, status: str, message: str, *details: dict) -> bytes:
    error = {"code": code, "message": message, "status": status, "details": list(details)}
    return orjson.dumps({"error": error})


def test_a_bad_key_is_a_401() -> None:
    body = error_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                      {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                       "domain": "googleapis.com"})
    error = ADAPTER.parse_error("gemini", 400, body, {})
    assert (error.status, error.code, error.provider) == (401, "INVALID_ARGUMENT", "gemini")
    assert error.message == "API key not valid. Please pass a valid API key."
    assert error.retry_after is None


def test_an_ordinary_400_stays_a_400() -> None:
    error = ADAPTER.parse_error("gemini", 400, error_body(400, "INVALID_ARGUMENT", "bad schema"), {})
    assert (error.status, error.code, error.message) == (400, "INVALID_ARGUMENT", "bad schema")


@pytest.mark.parametrize(("delay", "expected"), [("37s", "37"), ("1.5s", "2"), ("0s", "0")])
def test_retry_info_gives_retry_after(delay: str, expected: str) -> None:
    body = error_body(429, "RESOURCE_EXHAUSTED", "Quota exceeded",
                      {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                      {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    error = ADAPTER.parse_error("gemini", 429, body, {})
    assert (error.status, error.code, error.retry_after) == (429, "RESOURCE_EXHAUSTED", expected)


def test_a_retry_after_header_wins() -> None:
    body = error_body(429, "RESOURCE_EXHAUSTED", "Quota exceeded",
                      {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"})
    assert ADAPTER.parse_error("gemini", 429, body, {"retry-after": "5"}).retry_after == "5"


def test_an_array_wrapped_error_body() -> None:
    error = {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
    body = orjson.dumps([{"error": error}])
    error = ADAPTER.parse_error("gemini", 503, body, {})
    assert (error.status, error.code, error.message) == (503, "UNAVAILABLE", "The model is overloaded.")


def test_an_unreadable_error_body() -> None:
    error = ADAPTER.parse_error("gemini", 502, b"<html>bad gateway</html>", {})
    assert error.status == 502 and error.code is None and "<html>" not in error.message


def test_the_request_body_uses_the_official_sdk_field_names() -> None:
    types = pytest.importorskip("google.genai.types")
    images = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
              {"type": "image_url", "image_url": {"url": "https://x.test/y.png"}}]
    response_format = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    body = built({"messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, *images]},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r"},
    ], "tools": TOOLS, "tool_choice": "required", "max_tokens": 9, "temperature": 0.1, "top_p": 0.5,
        "stop": "x", "response_format": response_format}, limit=9)
    # The SDK's models forbid unknown fields, so a misspelt camelCase name fails here.
    for content in [*body["contents"], body["systemInstruction"]]:
        types.Content.model_validate(content)
    types.Tool.model_validate(body["tools"][0])
    types.ToolConfig.model_validate(body["toolConfig"])
    types.GenerationConfig.model_validate(body["generationConfig"])


@pytest.mark.parametrize("meta", [None, {}, {"promptTokenCount": 5}, {"candidatesTokenCount": 3},
                                  {"promptTokenCount": 5, "candidatesTokenCount": "3"},
                                  {"totalTokenCount": 8}])
def test_missing_or_partial_usage_is_none_and_the_body_has_no_usage(meta: dict | None) -> None:
    response: dict[str, Any] = {"candidates": [candidate([{"text": "Hello"}])]}
    if meta is not None:
        response["usageMetadata"] = meta
    body, usage = respond(response)
    assert usage is None and "usage" not in body
    assert body["choices"][0]["message"]["content"] == "Hello"


def test_a_blocked_prompt_without_usage_is_none() -> None:
    body, usage = respond({"promptFeedback": {"blockReason": "SAFETY"}})
    assert usage is None and body["choices"][0]["finish_reason"] == "content_filter"

"""The OpenAI format and the twelve providers' variations of it: usage read once, errors mapped."""

import orjson
import pytest

from alumia.domain.usage import TokenUsage
from alumia.providers.base import ChatRequest, UpstreamError
from alumia.providers.openai_compat import OpenAICompatAdapter, retry_after, usage_from_openai

import conformance


def chat_request(*, stream: bool = False, include_usage: bool = False) -> ChatRequest:
    body: dict = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return ChatRequest(raw=orjson.dumps(body), body=body, model="m", stream=stream,
                       include_usage=include_usage, max_output_tokens=None)


def chunk(**fields: object) -> bytes:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    return orjson.dumps({**base, **fields})


def test_openai_cached_tokens_are_inside_prompt_tokens() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 20,
             "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
             "completion_tokens_details": {"reasoning_tokens": 5}}
    assert usage_from_openai(usage) == TokenUsage(input_tokens=30, output_tokens=20, cache_read_tokens=60,
                                                  cache_write_tokens=10, reasoning_tokens=5)


def test_deepseek_cache_hits_and_moonshot_top_level_cached_tokens() -> None:
    deepseek = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 70,
                "prompt_cache_miss_tokens": 30}
    assert usage_from_openai(deepseek, "deepseek") == TokenUsage(30, 5, 70, 0, 0)
    moonshot = {"prompt_tokens": 100, "completion_tokens": 5, "cached_tokens": 40}
    assert usage_from_openai(moonshot, "moonshot") == TokenUsage(60, 5, 40, 0, 0)


def test_xai_reasoning_tokens_are_billed_as_output() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 20,
             "completion_tokens_details": {"reasoning_tokens": 30}}
    assert usage_from_openai(usage, "xai") == TokenUsage(10, 50, 0, 0, 30)
    assert usage_from_openai(usage, "openai") == TokenUsage(10, 20, 0, 0, 30)


def test_stream_drops_the_usage_chunk_unless_asked_but_meters_it() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    for asked in (False, True):
        request = chat_request(stream=True, include_usage=asked)
        translator = OpenAICompatAdapter("openai").stream_translator(request)
        frames = translator.feed(chunk(usage=None)) + translator.feed(chunk(choices=[], usage=usage))
        frames += translator.feed(b"[DONE]") + translator.close()
        assert translator.finished and translator.usage == TokenUsage(7, 3)
        assert len(frames) == (2 if asked else 1)


@pytest.mark.parametrize("provider", ["moonshot", "groq"])
def test_usage_in_a_non_standard_place_becomes_a_standard_usage_chunk(provider: str) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    last = (chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop", "usage": usage}])
            if provider == "moonshot" else chunk(x_groq={"id": "x", "usage": usage}))
    request = chat_request(stream=True, include_usage=True)
    translator = OpenAICompatAdapter(provider).stream_translator(request)
    frames = translator.feed(last) + translator.close()
    assert translator.usage == TokenUsage(7, 3)
    sent = [orjson.loads(f[6:]) for f in frames]
    assert "usage" not in sent[0]["choices"][0] and "usage" not in sent[0].get("x_groq", {})
    assert sent[-1]["choices"] == [] and sent[-1]["usage"]["prompt_tokens"] == 7
    for item in sent:
        conformance.validate("CreateChatCompletionStreamResponse", item)


def test_minimax_errors_inside_http_200_are_errors() -> None:
    body = orjson.dumps({"choices": [], "base_resp": {"status_code": 1004, "status_msg": "login fail"}})
    with pytest.raises(UpstreamError) as info:
        OpenAICompatAdapter("minimax").parse_response(body, chat_request())
    assert (info.value.status, info.value.message, info.value.code) == (401, "login fail", "1004")
    translator = OpenAICompatAdapter("minimax").stream_translator(chat_request(stream=True))
    [frame] = translator.feed(orjson.dumps({"base_resp": {"status_code": 1002, "status_msg": "rate limit"}}))
    assert orjson.loads(frame[6:])["error"]["message"] == "rate limit"


def test_malformed_bodies_are_502() -> None:
    for body in (b"<html>oops</html>", b'{"no": "choices"}'):
        with pytest.raises(UpstreamError) as info:
            OpenAICompatAdapter("openai").parse_response(body, chat_request())
        assert info.value.status == 502 and info.value.code == "malformed_response"


def test_zhipu_business_codes_and_xai_bad_key_map_to_http_meaning() -> None:
    zhipu = OpenAICompatAdapter("zhipu")
    for code, status in (("1001", 401), ("1113", 402), ("1211", 404), ("1302", 429)):
        err = zhipu.parse_error("zhipu", 400, orjson.dumps({"error": {"code": code, "message": "m"}}), {})
        assert err.status == status
    xai = OpenAICompatAdapter("xai").parse_error(
        "xai", 400, orjson.dumps({"code": "Client specified an invalid argument",
                                  "error": "Incorrect API key provided: xa***"}), {})
    assert xai.status == 401
    cerebras = OpenAICompatAdapter("cerebras").parse_error(
        "cerebras", 401, orjson.dumps({"message": "Wrong API Key", "type": "invalid_request_error",
                                       "code": "wrong_api_key"}), {})
    assert (cerebras.message, cerebras.code) == ("Wrong API Key", "wrong_api_key")


def test_retry_after_prefers_milliseconds_rounded_up() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == "2"
    assert retry_after({"retry-after": "7"}) == "7"
    assert retry_after({}) is None

"""The OpenAI format and the twelve providers' variations of it: usage read once, errors mapped."""

import orjson
import pytest

from alumia.domain.catalog import load_catalog
from alumia.domain.usage import TokenUsage
from alumia.providers.base import ChatRequest, UpstreamError, retry_after
from alumia.providers.openai_compat import OpenAICompatAdapter
from alumia.providers.openai_shape import usage_from_openai
from alumia.providers.registry import adapter_for

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


# --- the request sent upstream: the held limit in the provider's field, n, and a re-serialised body ---


def _raw_request(raw: bytes, *, choices: int = 1, stream: bool = False) -> ChatRequest:
    """A request as the gateway parses it: orjson keeps the last of duplicate keys."""
    body = orjson.loads(raw)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return ChatRequest(raw=raw, body=body, model=body["model"], stream=stream, include_usage=False,
                       max_output_tokens=limit, choices=choices)


def _sent(provider: str, request: ChatRequest, limit: int) -> dict:
    adapter = adapter_for(load_catalog().providers[provider])
    return orjson.loads(adapter.build("https://x.invalid/v1", request, "sk-test", limit).body)


LIMIT_FIELDS = {"openai": "max_completion_tokens", "deepseek": "max_tokens", "xai": "max_completion_tokens",
                "mistral": "max_tokens", "minimax": "max_tokens", "moonshot": "max_completion_tokens",
                "zhipu": "max_tokens", "xiaomi": "max_completion_tokens", "nvidia": "max_tokens",
                "qwen": "max_tokens", "cerebras": "max_completion_tokens", "groq": "max_completion_tokens"}


@pytest.mark.parametrize("provider", sorted(LIMIT_FIELDS))
def test_only_the_held_limit_goes_upstream_in_the_field_the_provider_reads(provider: str) -> None:
    # Held for 1 (max_completion_tokens wins); DeepSeek reads only max_tokens and generated 2,064.
    raw = (b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
           b'"max_completion_tokens":1,"max_tokens":2064}')
    body = _sent(provider, _raw_request(raw), 1)
    field = LIMIT_FIELDS[provider]
    other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
    assert body[field] == 1 and other not in body


@pytest.mark.parametrize("provider", ["openai", "deepseek"])
def test_the_models_limit_is_sent_when_the_client_set_none(provider: str) -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    assert _sent(provider, _raw_request(raw), 128000)[LIMIT_FIELDS[provider]] == 128000


@pytest.mark.parametrize("stream", [False, True])
def test_duplicate_keys_reach_the_provider_as_the_gateway_read_them(stream: bool) -> None:
    first, last = (b"false", b"true") if stream else (b"true", b"false")
    raw = (b'{"model":"gpt-5.6-sol","model":"gpt-5.6-luna","messages":[{"role":"user","content":"hi"}],'
           b'"stream":%s,"stream":%s}' % (first, last))
    request = _raw_request(raw, stream=stream)
    sent = OpenAICompatAdapter("openai").build("https://x.invalid/v1", request, "sk-test", 5).body
    assert sent.count(b'"model"') == 1 and sent.count(b'"stream"') == 1
    assert orjson.loads(sent)["model"] == "gpt-5.6-luna" == request.model
    assert orjson.loads(sent)["stream"] is stream


@pytest.mark.parametrize(("provider", "forwarded"), [("openai", True), ("xai", True), ("mistral", True),
                                                     ("moonshot", True), ("deepseek", False),
                                                     ("groq", False), ("qwen", False)])
def test_n_is_forwarded_only_where_the_provider_honours_it(provider: str, forwarded: bool) -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"n":3}'
    body = _sent(provider, _raw_request(raw, choices=3), 16)
    assert body.get("n") == (3 if forwarded else None)
    one = _sent(provider, _raw_request(b'{"model":"m","messages":[],"n":1}', choices=1), 16)
    assert "n" not in one


def test_the_catalog_names_a_limit_field_and_n_for_every_provider() -> None:
    providers = load_catalog().providers
    assert {name: p.limit_field for name, p in providers.items() if p.wire_format == "openai"} == LIMIT_FIELDS
    assert {name for name, p in providers.items() if p.supports_n} == {"openai", "gemini", "xai", "mistral",
                                                                        "moonshot"}
    assert providers["anthropic"].limit_field is None and providers["gemini"].limit_field is None


@pytest.mark.parametrize("usage", [None, {}, {"prompt_tokens": 7}, {"completion_tokens": 3},
                                   {"total_tokens": 10}, {"prompt_tokens": 7, "completion_tokens": None},
                                   {"prompt_tokens": "7", "completion_tokens": 3},
                                   {"prompt_tokens": True, "completion_tokens": 3}])
@pytest.mark.parametrize("provider", ["openai", "deepseek", "moonshot", "groq"])
def test_missing_or_partial_usage_is_none(provider: str, usage: dict | None) -> None:
    answer: dict = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                 "finish_reason": "stop"}]}
    if usage is not None:
        answer["usage"] = usage
    body = orjson.dumps(answer)
    assert OpenAICompatAdapter(provider).parse_response(body, chat_request()) == (body, None)


def test_complete_usage_is_read_even_when_zero() -> None:
    body = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0}})
    assert OpenAICompatAdapter("openai").parse_response(body, chat_request()) == (body, TokenUsage())

"""Token estimates for calls the provider reported no (or partial) usage for."""

import orjson

from alumia.domain.estimate import estimate_embedding_input, estimate_input, estimate_usage, text_tokens
from alumia.domain.usage import TokenUsage
from alumia.services.streaming import chunk_of, chunk_text_bytes


def test_text_is_a_token_per_four_utf8_bytes_rounded_up() -> None:
    assert text_tokens("") == 0
    assert text_tokens("abcd") == 1
    assert text_tokens("abcde") == 2
    assert text_tokens("é" * 4) == 2  # 8 bytes


def test_input_counts_text_parts_and_four_tokens_per_message() -> None:
    messages = [{"role": "system", "content": "abcdefgh"},
                {"role": "user", "content": [{"type": "text", "text": "abcd"},
                                             {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    assert estimate_input(messages) == (4 + 2) + (4 + 1)


def test_reported_counts_are_kept_and_output_only_raised() -> None:
    reported = TokenUsage(input_tokens=100, output_tokens=1, cache_read_tokens=50)
    assert estimate_usage(40, reported, input_tokens=7) == TokenUsage(100, 10, 50, 0, 0)
    assert estimate_usage(4, TokenUsage(100, 30), input_tokens=7) == TokenUsage(100, 30)
    assert estimate_usage(8, None, input_tokens=estimate_input([{"content": "abcd"}])) == TokenUsage(5, 2)


def test_the_input_side_is_given_not_worked_out_again() -> None:
    # The caller works the input out once per call (a stream asks on every frame).
    import pytest

    with pytest.raises(TypeError):
        estimate_usage([{"content": "abcd"}], 8, None)  # type: ignore[arg-type,call-arg]
    assert estimate_usage(8, None, input_tokens=123) == TokenUsage(123, 2)


def test_text_parts_that_are_not_strings_count_nothing_and_raise_nothing() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": None}, {"type": "text", "text": [1]},
                                             {"type": "text", "text": 5}, {"type": "text", "text": "abcd"}]}]
    assert estimate_input(messages) == 4 + 1


def test_delivered_text_counts_content_reasoning_and_tool_arguments() -> None:
    def frame(delta: dict) -> bytes:
        return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta}]}) + b"\n\n"

    frames = [frame({"role": "assistant", "content": ""}), frame({"content": "Hel"}),
              frame({"content": "lo"}), frame({"reasoning_content": "hmm"}),
              frame({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a":'}}]}),
              frame({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
              b'data: {"error": {"message": "x"}}\n\n']
    chunks = [chunk_of(frame) for frame in [*frames, b"data: [DONE]\n\n"]]
    assert chunks[-1] is None
    assert sum(chunk_text_bytes(c) for c in chunks if c) == len('Hellohmm{"a":1}')
    assert chunk_text_bytes(chunk_of(frame({"content": "é"})) or {}) == 2  # bytes, not characters


def test_delivered_text_of_any_shape_is_read_without_raising() -> None:
    # A hostile provider's chunk must not stop the relay before it meters.
    odd = [{"choices": 5}, {"choices": [5, None, "x"]}, {"choices": [{"delta": "text"}]},
           {"choices": [{"delta": {"tool_calls": [5, {"function": "f"}, {"function": {"arguments": 7}}]}}]}]
    assert [chunk_text_bytes(chunk) for chunk in odd] == [0, 0, 0, 1]
    assert chunk_text_bytes({"choices": [{"delta": {"content": ["ab"], "reasoning_content": 12}}]}) == 6 + 2


async def test_sse_payloads_reads_data_lines_and_bare_json_spanning_lines() -> None:
    from alumia.services.streaming import sse_payloads

    async def lines():
        for line in (b"event: ping\n", b'data: {"a": 1}\n', b"\n", b": keep-alive\n", b"{\n",
                     b'  "error": {"code": 429}\n', b"}\n", b"data: [DONE]\n"):
            yield line

    assert [p async for p in sse_payloads(lines())] == [b'{"a": 1}', b'{\n  "error": {"code": 429}\n}',
                                                        b"[DONE]"]


def test_an_unreadable_answer_is_the_providers_error_whatever_the_adapter() -> None:
    import pytest

    from alumia.providers.anthropic import AnthropicAdapter
    from alumia.providers.base import ChatRequest, UpstreamError
    from alumia.providers.gemini import GeminiAdapter
    from alumia.services.proxy import parse_answer

    request = ChatRequest(raw=b"{}", body={"messages": []}, model="m", stream=False, include_usage=False,
                          max_output_tokens=None)
    cases = ((AnthropicAdapter(), b'{"content": 5}'), (GeminiAdapter(), b'{"candidates": [5]}'))
    for adapter, wrong_shape in cases:
        for body in (b"<html>", b"[]", wrong_shape):
            with pytest.raises(UpstreamError) as info:
                parse_answer(adapter, "p", body, request)
            assert info.value.status == 502 and info.value.code == "malformed_response"


def test_embedding_inputs_are_estimated_per_text_or_counted_per_token_id() -> None:
    assert estimate_embedding_input(["abcd", "abcde", "é"]) == 1 + 2 + 1  # ceil(bytes / 4) each, no framing
    assert estimate_embedding_input([[1, 2, 3], [4]]) == 4

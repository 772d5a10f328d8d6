"""The stream relay against a hostile upstream.

Item 3: the input side of the estimate is worked out once per call, not on every frame. Item 8: a
frame that no translator can read ends the stream with an in-band error, and the call is still
metered for what was delivered: record written, charge exact, hold settled.
"""

import math
import secrets

import orjson
import pytest
from aiohttp import web

from alumia.domain import estimate
from alumia.domain.catalog import load_catalog
from alumia.domain.estimate import estimate_input
from alumia.domain.pricing import FeePolicy, platform_charge
from alumia.domain.usage import TokenUsage

from hostile import Gateway, Upstream, auth, sse

MODELS = {"openai": "gpt-5.6-luna", "anthropic": "claude-haiku-4-5", "gemini": "gemini-3.7-flash"}
DEPOSIT_CENTS = 5_000  # under the fee waiver's $100: no fee



def openai_chunk(delta: dict) -> bytes:
    chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def event(data: dict) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def test_the_input_estimate_runs_once_per_stream_not_once_per_frame(
        gw: Gateway, upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [{"role": "user", "content": f"m{i}"} for i in range(300)]
    frames = [openai_chunk({"content": "word "}) for _ in range(40)]

    async def answer(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        return await sse(request, [*frames, b"data: [DONE]\n\n"])  # no usage: the gateway estimates it

    upstream.script = answer
    read = []  # every message text the estimate read
    real = estimate._message_text

    def counted(content: object) -> str:
        read.append(content)
        return real(content)

    monkeypatch.setattr(estimate, "_message_text", counted)
    org = await gw.new_org(deposit_cents=DEPOSIT_CENTS)
    body = {"model": MODELS["openai"], "messages": messages, "stream": True, "max_tokens": 1000}
    response = await gw.client.post("/v1/chat/completions", json=body, headers=auth(org))
    assert response.status_code == 200 and response.headers["x-alumia-route"] == "platform"
    assert response.text.endswith("data: [DONE]\n\n")
    assert len(read) == len(messages)  # once for the call: before, once more for each of the 40 frames
    record, hold, entries = await gw.record_hold_entries(org)
    monkeypatch.undo()
    usage = TokenUsage(input_tokens=estimate_input(messages), output_tokens=math.ceil(40 * 5 / 4))
    charge = platform_charge(load_catalog().model(MODELS["openai"]).prices, usage, FeePolicy(),
                             DEPOSIT_CENTS).total_microcents
    assert (record["status"], record["usage_estimated"], record["charged_microcents"]) == ("ok", True, charge)
    assert (record["input_tokens"], record["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert hold is not None and (hold["status"], hold["charged_microcents"]) == ("settled", charge)
    assert entries == [-charge]


def choking_stream(provider: str, marker: str) -> tuple[list[bytes], int, int | None]:
    """A stream whose last frame the provider's translator cannot read: frames, text bytes, input reported."""
    if provider == "openai":
        return ([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "Hello "}),
                 openai_chunk({"content": "world"}), b'data: {"usage": ' + marker.encode() + b"}\n\n"],
                len("Hello world"), None)
    if provider == "anthropic":
        text = {"type": "text_delta", "text": "Hi "}
        return ([event({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 17}}}),
                 event({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
                 event({"type": "content_block_delta", "index": 0, "delta": text}),
                 event({"type": "content_block_delta", "index": 0, "delta": marker})],
                len("Hi "), 17)
    chunk = {"candidates": [{"content": {"parts": [{"text": "Bonjour"}], "role": "model"}}]}
    return ([b"data: " + orjson.dumps(chunk) + b"\n\n",
             b"data: " + orjson.dumps({"candidates": [{"content": {"parts": [marker]}}]}) + b"\n\n"],
            len("Bonjour"), None)


CHAT, MESSAGES = "/v1/chat/completions", "/v1/messages"


@pytest.mark.parametrize(("provider", "door"),
                         [("openai", CHAT), ("anthropic", CHAT), ("gemini", CHAT), ("openai", MESSAGES)])
async def test_a_frame_the_translator_chokes_on_ends_the_stream_metered(
        gw: Gateway, upstream: Upstream, provider: str, door: str) -> None:
    marker = "BODY-TEXT-" + secrets.token_hex(8)
    frames, text_bytes, reported_input = choking_stream(provider, marker)

    async def answer(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        return await sse(request, frames)

    upstream.script = answer
    org = await gw.new_org(deposit_cents=DEPOSIT_CENTS)
    messages = [{"role": "user", "content": "say hello to the world"}]
    body = {"model": MODELS[provider], "messages": messages, "stream": True, "max_tokens": 100}
    before = len(gw.log.lines)
    response = await gw.client.post(door, json=body, headers=auth(org))
    assert response.status_code == 200, response.text
    payloads = [orjson.loads(line[6:]) for line in response.text.splitlines()
                if line.startswith("data: ") and line != "data: [DONE]"]
    assert "data: [DONE]" not in response.text
    if door == MESSAGES:
        assert payloads[-1]["type"] == "error" and "could not read" in payloads[-1]["error"]["message"]
    else:
        assert payloads[-1]["error"]["code"] == "MALFORMED_STREAM"
        assert "could not read" in payloads[-1]["error"]["message"]

    record, hold, entries = await gw.record_hold_entries(org)
    # The messages as the gateway's chat request holds them (the /v1/messages door translates them).
    input_tokens = reported_input if reported_input is not None else estimate_input(messages)
    usage = TokenUsage(input_tokens=input_tokens, output_tokens=math.ceil(text_bytes / 4))
    charge = platform_charge(load_catalog().model(MODELS[provider]).prices, usage, FeePolicy(),
                             DEPOSIT_CENTS).total_microcents
    assert (record["status"], record["http_status"], record["error_code"], record["usage_estimated"]) == (
        "upstream_error", 200, "MALFORMED_STREAM", True)
    assert (record["input_tokens"], record["output_tokens"], record["charged_microcents"]) == (
        usage.input_tokens, usage.output_tokens, charge)
    assert hold is not None and (hold["status"], hold["charged_microcents"]) == ("settled", charge)
    assert entries == [-charge]
    logged = gw.log.lines[before:]
    assert len([line for line in logged if "could not be relayed" in line]) == 1
    assert not any(marker in line for line in logged)

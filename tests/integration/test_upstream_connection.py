"""A kept-alive upstream connection that drops before answering: sent once more, charged once.

A server closes an idle keep-alive connection on its own clock; when that lands just as the gateway
reuses the connection, the call must not fail for it (CI saw three calls fail at once this way).
"""

import orjson
import pytest
from aiohttp import web

from hostile import Gateway, Upstream, auth

CALL = {"model": "gpt-5.6-luna", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-5.6-luna",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}


def dropping(drops: int, seen: list[str]) -> object:
    """A script that drops the connection without a byte of answer `drops` times, then answers."""

    async def answer(request: web.Request, provider: str, key: str) -> web.StreamResponse:
        seen.append(key)
        await request.read()
        if len(seen) <= drops:
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPInternalServerError  # never written: the transport is already closed
        return web.json_response(ANSWER)

    return answer


async def test_a_dropped_connection_is_sent_once_more_and_charged_once(gw: Gateway,
                                                                        upstream: Upstream) -> None:
    seen: list[str] = []
    upstream.script = dropping(1, seen)  # type: ignore[assignment]
    org = await gw.new_org(deposit_cents=1_000)
    response = await gw.client.post("/v1/chat/completions", json=CALL, headers=auth(org))
    assert response.status_code == 200, response.text
    assert orjson.loads(response.content)["choices"][0]["message"]["content"] == "hello"
    assert seen == [gw.platform_key("openai")] * 2
    record, hold, entries = await gw.record_hold_entries(org)
    assert hold is not None and hold["status"] == "settled"
    assert (record["status"], record["input_tokens"], record["output_tokens"]) == ("ok", 7, 2)
    assert len(entries) == 1 and entries[0] == -record["charged_microcents"] < 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_connection_that_drops_twice_is_a_502_and_charges_nothing(gw: Gateway, upstream: Upstream,
                                                                          stream: bool) -> None:
    seen: list[str] = []
    upstream.script = dropping(10, seen)  # type: ignore[assignment]
    org = await gw.new_org(deposit_cents=1_000)
    body = {**CALL, "stream": stream}
    response = await gw.client.post("/v1/chat/completions", json=body, headers=auth(org))
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "BAD_GATEWAY"
    assert len(seen) == 2  # the first try and one more, never a third
    record, hold, entries = await gw.record_hold_entries(org)
    assert (record["status"], record["error_code"], record["charged_microcents"]) == (
        "error", "UPSTREAM_UNREACHABLE", 0)
    assert hold is not None and hold["status"] == "released"
    assert entries == []

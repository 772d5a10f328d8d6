"""Malformed-but-valid JSON on every wire format: a 422 naming the field, nothing sent, nothing charged.

On Anthropic- and Gemini-format models these bodies used to raise inside the
adapter or the stream relay (a plain-text 500, a call never metered); on OpenAI-format models they
went upstream as they were.
"""

from pathlib import Path

import httpx
import orjson
import pytest

from alumia.sim.env import sim_env
from alumia.sim.server import SimServer

import conformance
from harness import Org, Server, running_server

HELLO = [{"role": "user", "content": "hello"}]
SECRET = "secret-value-7f3a"  # in the bad values: no answer may echo it

MODELS = ["gpt-5.6-luna", "claude-haiku-4-5", "gemini-3.5-flash"]

# (the fields that replace a good body's, the start of the error message: the field's path)
CHAT_BODIES: list[tuple[dict, str]] = [
    ({"tools": "abc"}, "tools: "),
    ({"tools": [{"type": "function", "function": SECRET}]}, "tools[0].function: "),
    ({"stop": 5}, "stop: "),
    ({"stop": [SECRET, 5]}, "stop: "),
    ({"tool_choice": {"function": "x"}}, "tool_choice.type: "),
    ({"tool_choice": {"type": "function", "function": SECRET}}, "tool_choice.function: "),
    ({"response_format": {"type": "json_schema", "json_schema": SECRET}}, "response_format.json_schema: "),
    ({"temperature": SECRET}, "temperature: "),
    ({"n": 0}, "n: "),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
     "messages[0].content[0].text: must be a string"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": [SECRET]}]}]},
     "messages[0].content[0].text: must be a string"),
    ({"messages": [*HELLO, {"role": "assistant", "content": "x"},
                   {"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "text", "text": 7}]}]},
     "messages[2].content[1].text: must be a string"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": SECRET}]}]},
     "messages[0].content[0].image_url: "),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": SECRET}]}, *HELLO]},
     "messages[0].tool_calls[0].function: "),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": 5}, *HELLO]},
     "messages[0].tool_call_id: "),
    ({"messages": [{"role": SECRET, "content": "x"}]}, "messages[0].role: "),
    ({"messages": HELLO * 2_049}, "messages: at most 2048 messages"),
]

MESSAGES_BODIES: list[tuple[dict, str]] = [
    ({"tools": "abc"}, "tools: "),
    ({"tools": [{"name": "f"}]}, "tools[0]: "),
    ({"tool_choice": {"function": "x"}}, "tool_choice: "),
    ({"stop_sequences": 5}, "stop_sequences: "),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
     "messages[0].content[0].text: must be a string"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}]},
     "messages[0].content[0].content: "),
    ({"messages": [*HELLO, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": SECRET}]}]}, "messages[1].content[0].input: "),
    ({"metadata": SECRET}, "metadata: "),
    ({"temperature": [SECRET]}, "temperature: "),
]


async def balance(server: Server, org: Org) -> dict:
    async with server.api(org.key) as api:
        data = (await api.get("/api/v1/billing")).json()["data"]
    return {"balance": data["balance"], "requests": data["usage"]["currentMonth"]["requestCount"]}


async def post(server: Server, org: Org, path: str, body: dict) -> httpx.Response:
    async with server.api(org.key) as api:
        return await api.post(path, content=orjson.dumps(body), headers={"Content-Type": "application/json"})


def assert_named(response: httpx.Response, field: str) -> dict:
    assert response.status_code == 422, (field, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-alumia-request-id"].startswith("req_")
    assert SECRET not in response.text
    return response.json()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model", MODELS)
async def test_bad_chat_bodies_are_422_naming_the_field_and_send_and_charge_nothing(
        server: Server, sim: SimServer, model: str, stream: bool) -> None:
    org = await server.new_org()
    before, calls = await balance(server, org), len(sim.calls())
    for fields, field in CHAT_BODIES:
        body = {"model": model, "messages": HELLO, "stream": stream, **fields}
        error = assert_named(await post(server, org, "/v1/chat/completions", body), field)
        conformance.validate("ErrorResponse", error)
        assert error["error"]["code"] == "VALIDATION_ERROR"
        assert error["error"]["message"].startswith(field), (field, error)
    assert len(sim.calls()) == calls
    assert await balance(server, org) == before


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model", MODELS)
async def test_bad_messages_bodies_are_422_in_anthropic_shape_and_send_and_charge_nothing(
        server: Server, sim: SimServer, model: str, stream: bool) -> None:
    org = await server.new_org()
    before, calls = await balance(server, org), len(sim.calls())
    for fields, field in MESSAGES_BODIES:
        body = {"model": model, "max_tokens": 50, "messages": HELLO, "stream": stream, **fields}
        error = assert_named(await post(server, org, "/v1/messages", body), field)
        assert error["type"] == "error" and error["request_id"].startswith("req_")
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == "VALIDATION_ERROR"
        assert error["error"]["message"].startswith(field), (field, error)
    assert len(sim.calls()) == calls
    assert await balance(server, org) == before


async def test_a_good_body_beside_them_still_goes_through(server: Server, sim: SimServer) -> None:
    org = await server.new_org()
    calls = len(sim.calls())
    body = {"model": "claude-haiku-4-5", "messages": HELLO, "n": 1, "stop": ["END"], "tool_choice": "auto",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}
    response = await post(server, org, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert len(sim.calls()) == calls + 1


async def test_the_limits_are_the_servers_settings(sim: SimServer, tmp_path: Path) -> None:
    env = {**sim_env(sim.host, sim.port), "ALUMIA_MAX_MESSAGES": "3", "ALUMIA_MAX_CONTENT_PARTS": "4"}
    async with running_server("sqlite", tmp_path, env, "limits") as server:
        org = await server.new_org()
        calls = len(sim.calls())
        parts = [{"type": "text", "text": "x"}] * 2
        cases = [({"messages": HELLO * 4}, "messages: at most 3 messages"),
                 ({"messages": [{"role": "user", "content": parts}] * 3}, "messages[2].content: too many")]
        for fields, field in cases:
            body = {"model": "gemini-3.5-flash", "messages": HELLO, **fields}
            error = assert_named(await post(server, org, "/v1/chat/completions", body), field)
            assert error["error"]["message"].startswith(field), error
            # The same over the Messages front door, counted on the request it becomes.
            messages = [{"role": "user", "content": parts}] * len(fields["messages"])
            body = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": messages}
            assert_named(await post(server, org, "/v1/messages", body), "messages")
        assert len(sim.calls()) == calls
        fits = {"model": "gemini-3.5-flash", "messages": [{"role": "user", "content": parts}] * 2}
        assert (await post(server, org, "/v1/chat/completions", fits)).status_code == 200

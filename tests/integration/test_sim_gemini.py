"""The simulated Gemini generateContent API over real HTTP, driven by the official `google-genai` SDK.

Expected texts and token counts are worked out by hand from the rule in `alumia.sim.gemini_format`
(the OpenAI-format rule over contents, plus the system instruction as one more), not by calling it.

The SDK joins its base URL, its `api_version` and ``models/{model}:generateContent``, so it is pointed
at the host root plus the provider's prefix, with the version given apart:
``genai.Client(api_key=..., http_options=types.HttpOptions(base_url="http://127.0.0.1:PORT/gemini",
api_version="v1beta"))``. It sends the key in ``x-goog-api-key``.
"""

import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import orjson
import pytest
from google import genai
from google.genai import errors, types
from jsonschema import Draft202012Validator

from alumia.domain.catalog import load_catalog
from alumia.sim.server import SimServer

MODEL = "gemini-3.5-flash"
SYSTEM = "Answer in one word."  # 4 + 4 = 8
CONTENTS = [
    types.Content(role="user", parts=[types.Part(text="Name a primary colour")]),  # 4 + 4 = 8
    types.Content(role="model", parts=[types.Part(text="Red")]),  # 4 + 1 = 5
    types.Content(role="user", parts=[types.Part(text="Name another one please")]),  # 4 + 4 = 8
]
RAW_CONTENTS: list[dict[str, Any]] = [
    {"role": "user", "parts": [{"text": "Name a primary colour"}]},
    {"role": "model", "parts": [{"text": "Red"}]},
    {"role": "user", "parts": [{"text": "Name another one please"}]},
]
PROMPT_TOKENS = 8 + 8 + 5 + 8
REPLY = f"Simulated reply from gemini/{MODEL}: Name another one please"
CANDIDATE_TOKENS = 4 + 4

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 3},
        "note": {"type": "string"},
    },
    "required": ["city", "unit", "days"],
}
WEATHER_ARGS = {"city": "sim", "unit": "celsius", "days": 3}
# '{"city": "sim", "unit": "celsius", "days": 3}' splits into 6 words.
WEATHER_TOKENS = 6
# Declared with Gemini's own (OpenAPI-style, upper-case) Schema: nothing required, so every property.
SEARCH_SCHEMA = types.Schema(type=types.Type.OBJECT, properties={
    "q": types.Schema(type=types.Type.STRING),
    "n": types.Schema(type=types.Type.NUMBER),
    "flags": types.Schema(type=types.Type.ARRAY, items=types.Schema(type=types.Type.BOOLEAN)),
    "opts": types.Schema(type=types.Type.OBJECT, properties={"deep": types.Schema(type=types.Type.BOOLEAN)}),
})
SEARCH_ARGS = {"q": "sim", "n": 1.5, "flags": [True], "opts": {"deep": True}}
# '{"q": "sim", "n": 1.5, "flags": [true], "opts": {"deep": true}}' splits into 9 words.
SEARCH_TOKENS = 9
TOOLS = [types.Tool(function_declarations=[
    types.FunctionDeclaration(name="get_weather", description="Weather",
                              parameters_json_schema=WEATHER_SCHEMA),
    types.FunctionDeclaration(name="search", description="Search", parameters=SEARCH_SCHEMA),
])]


def fake_key(marker: str = "") -> str:
    """A throwaway key made at run time; `marker` ("invalid") makes the simulator reject it."""
    return f"AIza-test-{marker}" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def sdk_base_url(sim: SimServer) -> str:
    return f"http://127.0.0.1:{sim.port}/gemini"


def client_for(sim: SimServer, key: str | None = None) -> genai.Client:
    """An SDK client; keep a reference while using it, as a collected Client closes its connections."""
    return genai.Client(api_key=key or fake_key(),
                        http_options=types.HttpOptions(base_url=sdk_base_url(sim), api_version="v1beta"))


@pytest.fixture(scope="module")
def client(sim: SimServer) -> Iterator[genai.Client]:
    """One SDK client with a good key for the whole file: building one per test costs more than the calls."""
    with client_for(sim) as sdk:
        yield sdk


def config(**fields: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(system_instruction=SYSTEM, **fields)


def forced(*allowed: str) -> types.GenerateContentConfig:
    """A config that forces a function call, limited to `allowed` names when given."""
    calling = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY,
                                          allowed_function_names=list(allowed) or None)
    return config(tools=TOOLS, tool_config=types.ToolConfig(function_calling_config=calling))


def with_directive(directive: str) -> list[types.Content]:
    """CONTENTS with `directive` appended to the last user content."""
    return [*CONTENTS[:-1],
            types.Content(role="user", parts=[types.Part(text=f"Name another one please {directive}")])]


def sse_payloads(body: bytes) -> list[dict[str, Any]]:
    """The `data:` payloads of a Gemini SSE body, checking the framing on the way."""
    assert body.endswith(b"\n\n")
    frames = body[:-2].split(b"\n\n")
    assert all(frame.startswith(b"data: ") and b"\n" not in frame for frame in frames), frames
    return [orjson.loads(frame[len(b"data: "):]) for frame in frames]


def headers_for(key: str | None = None) -> dict[str, str]:
    return {"x-goog-api-key": key or fake_key()}


def test_sdk_base_url_is_the_sim_base_without_the_version(sim: SimServer) -> None:
    assert sim.base_url("gemini") == sdk_base_url(sim) + "/v1beta"


def test_generate_content(sim: SimServer, client: genai.Client) -> None:
    response = client.models.generate_content(model=MODEL, contents=CONTENTS, config=config())
    assert response.text == REPLY
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.index == 0
    assert candidate.content.role == "model"
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (
        PROMPT_TOKENS, CANDIDATE_TOKENS, PROMPT_TOKENS + CANDIDATE_TOKENS)
    assert response.model_version == MODEL and response.response_id


def test_the_wire_shape(sim: SimServer, http: httpx.Client) -> None:
    response = http.post(f"{sim.base_url('gemini')}/models/{MODEL}:generateContent", headers=headers_for(),
                         json={"contents": RAW_CONTENTS})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
    assert body["candidates"] == [{"content": {"role": "model", "parts": [{"text": REPLY}]},
                                   "finishReason": "STOP", "index": 0}]
    # No system instruction this time.
    prompt = PROMPT_TOKENS - 8
    assert body["usageMetadata"] == {"promptTokenCount": prompt, "candidatesTokenCount": CANDIDATE_TOKENS,
                                     "totalTokenCount": prompt + CANDIDATE_TOKENS}


def test_snake_case_fields_are_read_too(sim: SimServer, http: httpx.Client) -> None:
    response = http.post(
        f"{sim.base_url('gemini')}/models/{MODEL}:generateContent", headers=headers_for(),
        json={"contents": RAW_CONTENTS, "system_instruction": {"parts": [{"text": SYSTEM}]},
              "generation_config": {"max_output_tokens": 3}})
    body = response.json()
    assert body["candidates"][0]["content"]["parts"] == [{"text": "Simulated reply from"}]
    assert body["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert body["usageMetadata"]["promptTokenCount"] == PROMPT_TOKENS
    assert body["usageMetadata"]["candidatesTokenCount"] == 3


def test_max_output_tokens_cuts_the_reply(sim: SimServer, client: genai.Client) -> None:
    response = client.models.generate_content(model=MODEL, contents=CONTENTS,
                                                       config=config(max_output_tokens=5))
    assert response.text == f"Simulated reply from gemini/{MODEL}: Name"
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata.candidates_token_count == 5
    assert response.usage_metadata.total_token_count == PROMPT_TOKENS + 5


def test_generate_content_stream(sim: SimServer, client: genai.Client) -> None:
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=CONTENTS,
                                                                 config=config()))
    # Three words a chunk: "Simulated reply from", " gemini/gemini-3.5-flash: Name another", " one please".
    assert [c.text for c in chunks] == ["Simulated reply from", f" gemini/{MODEL}: Name another",
                                        " one please"]
    assert "".join(c.text for c in chunks) == REPLY
    # Every chunk carries usage: the prompt and the candidates so far.
    assert [(c.usage_metadata.prompt_token_count, c.usage_metadata.candidates_token_count,
             c.usage_metadata.total_token_count) for c in chunks] == [
        (PROMPT_TOKENS, n, PROMPT_TOKENS + n) for n in (3, 6, 8)]
    assert [c.candidates[0].finish_reason for c in chunks] == [None, None, types.FinishReason.STOP]
    assert len({c.response_id for c in chunks}) == 1


def test_stream_framing_on_the_wire(sim: SimServer, http: httpx.Client) -> None:
    url = f"{sim.base_url('gemini')}/models/{MODEL}:streamGenerateContent"
    response = http.post(url + "?alt=sse", headers=headers_for(), json={"contents": RAW_CONTENTS})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.content)  # no [DONE]: every frame is a JSON response
    assert [p["usageMetadata"]["candidatesTokenCount"] for p in payloads] == [3, 6, 8]
    assert ["finishReason" in p["candidates"][0] for p in payloads] == [False, False, True]
    # Without alt=sse: the same chunks as one JSON array.
    array = http.post(url, headers=headers_for(), json={"contents": RAW_CONTENTS})
    assert array.status_code == 200 and array.headers["content-type"] == "application/json"
    chunks = array.json()
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == [
        p["candidates"][0]["content"]["parts"][0]["text"] for p in payloads]


@pytest.mark.parametrize(("allowed", "name", "expected", "tokens"), [
    ((), "get_weather", WEATHER_ARGS, WEATHER_TOKENS),
    (("search",), "search", SEARCH_ARGS, SEARCH_TOKENS),
])
def test_forced_function_call(client: genai.Client, allowed: tuple[str, ...], name: str,
                              expected: dict[str, Any], tokens: int) -> None:
    response = client.models.generate_content(model=MODEL, contents=CONTENTS, config=forced(*allowed))
    assert response.function_calls is not None and len(response.function_calls) == 1
    call = response.function_calls[0]
    assert call.name == name and call.args == expected
    if name == "get_weather":
        Draft202012Validator(WEATHER_SCHEMA).validate(call.args)
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (
        PROMPT_TOKENS, tokens, PROMPT_TOKENS + tokens)

    chunks = list(client.models.generate_content_stream(model=MODEL, contents=CONTENTS,
                                                        config=forced(*allowed)))
    assert len(chunks) == 1
    assert chunks[0].function_calls[0].name == name and chunks[0].function_calls[0].args == expected
    assert chunks[0].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[0].usage_metadata.candidates_token_count == tokens


def test_auto_mode_gets_text(sim: SimServer, client: genai.Client) -> None:
    calling = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.AUTO)
    response = client.models.generate_content(
        model=MODEL, contents=CONTENTS,
        config=config(tools=TOOLS, tool_config=types.ToolConfig(function_calling_config=calling)))
    assert response.function_calls is None and response.text == REPLY


def test_bad_key_is_a_400_client_error(sim: SimServer, http: httpx.Client) -> None:
    bad = client_for(sim, fake_key("invalid-"))
    with pytest.raises(errors.ClientError) as info:
        bad.models.generate_content(model=MODEL, contents="hi")
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert info.value.message == "API key not valid. Please pass a valid API key."
    assert info.value.details == {"error": {
        "code": 400, "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                     "domain": "googleapis.com",
                     "metadata": {"service": "generativelanguage.googleapis.com"}}],
    }}
    with pytest.raises(errors.ClientError):
        list(bad.models.list())
    bad.close()
    # No key at all: the same 400, on every route.
    for response in (http.get(sim.base_url("gemini") + "/models"),
                     http.post(f"{sim.base_url('gemini')}/models/{MODEL}:generateContent", json={})):
        assert response.status_code == 400
        assert response.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_the_key_can_come_in_the_query(sim: SimServer, http: httpx.Client) -> None:
    key = fake_key()
    response = http.post(f"{sim.base_url('gemini')}/models/{MODEL}:generateContent",
                         params={"key": key}, json={"contents": RAW_CONTENTS})
    assert response.status_code == 200
    bad = http.get(sim.base_url("gemini") + "/models", params={"key": fake_key("invalid-")})
    assert bad.status_code == 400
    calls = [c for c in sim.calls() if c["keySha256"] == hashlib.sha256(key.encode()).hexdigest()]
    assert [(c["model"], c["path"]) for c in calls] == [
        (MODEL, f"/gemini/v1beta/models/{MODEL}:generateContent")]


def test_fault_429_carries_retry_info(sim: SimServer, client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents=with_directive("[[sim:status=429]]"))
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert info.value.details["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]
    # Gemini sends no retry-after header; the delay is only in the body.
    assert "retry-after" not in info.value.response.headers


@pytest.mark.parametrize(("status", "rpc_status"), [(503, "UNAVAILABLE"), (500, "INTERNAL")])
def test_server_faults(sim: SimServer, client: genai.Client, status: int, rpc_status: str) -> None:
    with pytest.raises(errors.ServerError) as info:
        list(client.models.generate_content_stream(
            model=MODEL, contents=with_directive(f"[[sim:status={status}]]")))
    assert info.value.code == status and info.value.status == rpc_status
    assert "details" not in info.value.details["error"]


def test_the_key_is_checked_before_faults(sim: SimServer) -> None:
    with client_for(sim, fake_key("invalid-")) as bad, pytest.raises(errors.ClientError) as info:
        bad.models.generate_content(model=MODEL, contents=with_directive("[[sim:status=503]]"))
    assert info.value.code == 400


def test_cut_after_drops_the_stream(sim: SimServer, client: genai.Client, http: httpx.Client) -> None:
    texts: list[str] = []
    # What really happens: the SDK yields the chunks it got, then the transport's error comes out of the
    # iteration unwrapped (httpx2.RemoteProtocolError, an incomplete chunked body).
    with pytest.raises(httpx2.RemoteProtocolError):
        for chunk in client.models.generate_content_stream(
                model=MODEL, contents=with_directive("[[sim:cut_after=1]]")):
            texts.append(chunk.text or "")
    assert texts == ["Simulated reply from"]

    # A cut longer than the stream still withholds the last chunk, the one with the finish reason.
    received = b""
    directive = [{"role": "user", "parts": [{"text": "Name another one please [[sim:cut_after=50]]"}]}]
    with http.stream("POST", f"{sim.base_url('gemini')}/models/{MODEL}:streamGenerateContent?alt=sse",
                     headers=headers_for(), json={"contents": directive}) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in response.iter_raw():
                received += piece
    payloads = sse_payloads(received)
    assert len(payloads) == 2 and all("finishReason" not in p["candidates"][0] for p in payloads)

    # Not streaming: ignored.
    response = client.models.generate_content(model=MODEL, contents=with_directive("[[sim:cut_after=1]]"),
                                                       config=config())
    assert response.text == REPLY


def test_no_usage_and_directive_removal(sim: SimServer, client: genai.Client) -> None:
    response = client.models.generate_content(model=MODEL, contents=with_directive("[[sim:no_usage]]"),
                                              config=config())
    assert response.text == REPLY and response.usage_metadata is None
    chunks = list(client.models.generate_content_stream(model=MODEL,
                                                        contents=with_directive("[[sim:no_usage]]")))
    assert chunks and all(c.usage_metadata is None for c in chunks)
    # The directive adds no prompt tokens.
    counted = client.models.generate_content(model=MODEL, contents=with_directive("[[sim:delay_ms=1]]"),
                                             config=config())
    assert counted.usage_metadata.prompt_token_count == PROMPT_TOKENS


def test_request_checks(sim: SimServer, http: httpx.Client) -> None:
    url = f"{sim.base_url('gemini')}/models/{MODEL}:generateContent"
    for body in ({}, {"contents": []}, {"contents": RAW_CONTENTS, "generationConfig": {"maxOutputTokens": 0}},
                 {"contents": [{"role": "user", "parts": [{"text": "[[sim:status=99]]"}]}]}):
        response = http.post(url, headers=headers_for(), json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert http.post(url, headers=headers_for(), content=b"{nope").status_code == 400
    unknown = http.post(f"{sim.base_url('gemini')}/models/{MODEL}:countTokens", headers=headers_for(),
                        json={"contents": RAW_CONTENTS})
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"
    nowhere = http.get(sim.base_url("gemini") + "/tunedModels", headers=headers_for())
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == 404


def test_models_list(sim: SimServer, client: genai.Client, http: httpx.Client) -> None:
    catalog_ids = [m.id for m in load_catalog().models.values() if m.provider == "gemini"]
    models = list(client.models.list())
    assert [m.name for m in models] == [f"models/{i}" for i in catalog_ids]
    assert all(m.supported_actions == ["generateContent"] for m in models)
    body = http.get(sim.base_url("gemini") + "/models", headers=headers_for()).json()
    assert set(body) == {"models"}
    assert body["models"][0] == {"name": f"models/{catalog_ids[0]}", "displayName": "Gemini 3.1 Pro Preview",
                                 "supportedGenerationMethods": ["generateContent"]}


def test_calls_are_recorded(sim: SimServer) -> None:
    key = fake_key()
    with client_for(sim, key) as own:
        own.models.generate_content(model=MODEL, contents="hi")
        list(own.models.generate_content_stream(model="gemini-3.7-flash", contents="hi"))
        list(own.models.list())
    calls = [c for c in sim.calls() if c["keySha256"] == hashlib.sha256(key.encode()).hexdigest()]
    assert [(c["provider"], c["model"], c["stream"], c["path"]) for c in calls] == [
        ("gemini", MODEL, False, f"/gemini/v1beta/models/{MODEL}:generateContent"),
        ("gemini", "gemini-3.7-flash", True, "/gemini/v1beta/models/gemini-3.7-flash:streamGenerateContent"),
        ("gemini", None, False, "/gemini/v1beta/models"),
    ]
    assert key not in orjson.dumps(sim.calls()).decode()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_thinking_config_makes_thoughts_counted_and_shown_when_asked(sim: SimServer, client: genai.Client,
                                                                     stream: bool) -> None:
    thought = f"Simulated thinking by gemini/{MODEL}: Name another one please"
    thinking = types.ThinkingConfig(thinking_budget=1024, include_thoughts=True)
    if stream:
        chunks = list(client.models.generate_content_stream(model=MODEL, contents=CONTENTS,
                                                            config=config(thinking_config=thinking)))
        parts = [part for chunk in chunks for part in chunk.candidates[0].content.parts]  # type: ignore[index,union-attr]
        usage = chunks[-1].usage_metadata
    else:
        response = client.models.generate_content(model=MODEL, contents=CONTENTS,
                                                  config=config(thinking_config=thinking))
        parts = response.candidates[0].content.parts  # type: ignore[index,union-attr,assignment]
        usage = response.usage_metadata
    assert parts[0].thought is True and parts[0].text == thought
    assert usage is not None and usage.thoughts_token_count == len(thought.split())
    # Recorded as sent: the SDK writes snake_case, which the API (and the simulator) also reads.
    sent = {"thinking_budget": 1024, "include_thoughts": True}
    assert sim.calls()[-1]["received"]["thinkingConfig"] == sent

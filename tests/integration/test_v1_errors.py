"""Every answer under /v1/ is JSON an SDK can read: unknown paths and wrong methods.

OpenAI's error shape everywhere under /v1/, Anthropic's under /v1/messages, each with the request id;
the management API and the dashboard keep theirs. The app runs in process, over a real SQLite file.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI

from alumia.app import create_app
from alumia.config import Settings
from alumia.storage.migrate import upgrade

import conformance

BASE = "http://alumia.test"


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    """The whole app over a fresh SQLite file, its lifespan entered."""
    data_dir: Path = tmp_path_factory.mktemp("alumia-v1-errors")
    settings = Settings.from_env({"ALUMIA_DATA_DIR": str(data_dir)})
    await asyncio.to_thread(upgrade, settings.resolved_database_url)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, in process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        yield http


def openai_error(response: httpx.Response, status: int, code: str) -> dict:
    """The error of an answer in OpenAI's shape, checked against OpenAI's published schema."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-alumia-request-id"]
    body = response.json()
    conformance.validate("ErrorResponse", body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    return body["error"]


def anthropic_error(response: httpx.Response, status: int, kind: str) -> dict:
    """The error of an answer in Anthropic's shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-alumia-request-id"] == response.headers["request-id"]
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nope"), ("POST", "/v1/nope"), ("GET", "/v1"),
                                              ("POST", "/v1/chat/completions/extra"),
                                              ("GET", "/v1/modelsx/gpt-5.6-luna")])
async def test_an_unknown_v1_path_is_a_json_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    error = openai_error(await client.request(method, path), 404, "NOT_FOUND")
    assert error["type"] == "invalid_request_error"
    assert "/v1/chat/completions" in error["message"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/v1/chat/completions", {"POST"}), ("PUT", "/v1/chat/completions", {"POST"}),
    ("POST", "/v1/models", {"GET", "HEAD"}), ("DELETE", "/v1/models/gpt-5.6-luna", {"GET", "HEAD"})])
async def test_a_wrong_method_on_a_v1_route_is_a_json_405(client: httpx.AsyncClient, method: str, path: str,
                                                          allowed: set[str]) -> None:
    response = await client.request(method, path)
    error = openai_error(response, 405, "METHOD_NOT_ALLOWED")
    assert set(response.headers["allow"].split(", ")) == allowed
    assert error["message"] == f"{method} is not allowed here; use {response.headers['allow']}"


@pytest.mark.parametrize(("method", "path", "status", "kind"), [
    ("GET", "/v1/messages", 405, "invalid_request_error"),
    ("POST", "/v1/messages/count_tokens", 401, "authentication_error"),  # a route now: a stranger's 401
    ("GET", "/v1/messages/batches", 404, "not_found_error"),
    ("POST", "/v1/messages/batches", 404, "not_found_error")])
async def test_v1_messages_answers_in_anthropic_shape(client: httpx.AsyncClient, method: str, path: str,
                                                     status: int, kind: str) -> None:
    error = anthropic_error(await client.request(method, path), status, kind)
    assert error["code"] == {405: "METHOD_NOT_ALLOWED", 401: "UNAUTHORIZED", 404: "NOT_FOUND"}[status]


async def test_the_openai_sdk_reads_the_error(client: httpx.AsyncClient) -> None:
    """What the issue saw: the SDK showed only "Error code: 404". Now it has our code and message."""
    sdk = openai.AsyncOpenAI(base_url=f"{BASE}/v1", api_key="alm_test_unused", http_client=client,
                             max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        await sdk.get("/embeddings/nope", cast_to=object)
    assert raised.value.code == "NOT_FOUND"
    assert "/v1/chat/completions" in raised.value.message
    assert raised.value.request_id is None or raised.value.request_id  # OpenAI's header is x-request-id
    assert raised.value.response.headers["x-alumia-request-id"]


async def test_the_anthropic_sdk_reads_the_error(app: FastAPI) -> None:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as http:
        sdk = anthropic.AsyncAnthropic(base_url=BASE, api_key="alm_test_unused", http_client=http,
                                       max_retries=0)
        with pytest.raises(anthropic.NotFoundError) as raised:
            await sdk.messages.batches.list()  # Message Batches: not served here
    assert raised.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert raised.value.request_id == raised.value.response.headers["x-alumia-request-id"]


async def test_the_api_and_the_pages_keep_their_shapes(client: httpx.AsyncClient) -> None:
    api = await client.get("/api/v1/nope")
    assert api.status_code == 404
    assert api.json() == {"success": False, "error": {"code": "NOT_FOUND", "message": "Not Found"}}
    page = await client.get("/nope")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")

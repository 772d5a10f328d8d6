"""gateway/door.py: model calls reach their handlers directly; everything else reaches the framework."""

import httpx
import orjson
from sqlalchemy.exc import OperationalError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from alumia.errors import AppError, ErrorCode
from alumia.gateway.door import ModelCallDoor


async def framework(scope: Scope, receive: Receive, send: Send) -> None:
    await Response(b"framework " + scope["path"].encode())(scope, receive, send)


async def handler(request: Request) -> Response:
    body = await request.body()
    if body == b"fail":
        raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, "too big")
    if body == b"db":
        raise OperationalError("SELECT 1", {}, Exception("gone"))
    return Response(b"handler " + body)


def render(request: Request, error: AppError) -> Response:
    return Response(orjson.dumps({"code": error.code}), status_code=error.status, headers=error.headers)


def client() -> httpx.AsyncClient:
    door = ModelCallDoor({("POST", "/v1/chat/completions"): handler}, framework, render)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=door), base_url="http://door.test")


async def test_a_model_call_goes_straight_to_its_handler() -> None:
    async with client() as http:
        answer = await http.post("/v1/chat/completions", content=b"hi")
    assert (answer.status_code, answer.content) == (200, b"handler hi")


async def test_another_method_or_path_goes_to_the_framework() -> None:
    async with client() as http:
        other_method = await http.get("/v1/chat/completions")
        other_path = await http.post("/v1/chat/completions/", content=b"hi")
    assert other_method.content == b"framework /v1/chat/completions"
    assert other_path.content == b"framework /v1/chat/completions/"


async def test_errors_past_the_handler_are_rendered_in_the_envelope() -> None:
    async with client() as http:
        too_big = await http.post("/v1/chat/completions", content=b"fail")
        database = await http.post("/v1/chat/completions", content=b"db")
    assert (too_big.status_code, too_big.json()) == (413, {"code": "PAYLOAD_TOO_LARGE"})
    assert (database.status_code, database.json()) == (503, {"code": "SERVICE_UNAVAILABLE"})
    assert database.headers["retry-after"] == "2"


def test_every_error_code_carries_its_status_and_renders_as_its_name() -> None:
    assert {code: code.status for code in ErrorCode}["NOT_FOUND"] == 404
    for code in ErrorCode:
        assert 400 <= code.status <= 599 and str(code) == code.value == code.name
        assert AppError(code, "m").status == code.status
    assert AppError(ErrorCode.BYOK_KEY_REJECTED, "m", status=401).status == 401  # the raiser's status wins
    assert orjson.loads(orjson.dumps({"code": ErrorCode.CONFLICT})) == {"code": "CONFLICT"}

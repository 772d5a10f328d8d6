"""A fast OpenAI-shaped upstream for the benchmark: fixed answers, no model, any bearer key.

`POST /chat/completions` answers a fixed `chat.completion` with `usage`; with `"stream": true` it
answers an SSE stream (a role chunk, three content chunks, a finish chunk, a usage chunk with empty
`choices`, then `data: [DONE]`), one write per chunk. `GET /models` lists the one model (the gateway
checks a BYOK key with it). Every answer is built once at start, so a call costs the server only
parsing the request body and writing the bytes: well under a millisecond.

    python bench/fast_upstream.py --fd N     # serve on an inherited listening socket
    python bench/fast_upstream.py --port P   # or bind 127.0.0.1:P (0: any free port, printed)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import time

import orjson
from aiohttp import web

MODEL = "gpt-5.6-luna"
REPLY_WORDS = ["Hello", " from", " the bench"]
PROMPT_TOKENS, COMPLETION_TOKENS = 12, 4
USAGE = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
         "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
         "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
CREATED = int(time.time())
_ids = itertools.count(1)


def completion_body() -> bytes:
    """The non-streamed answer (its id is filled in per call)."""
    return orjson.dumps({
        "id": "chatcmpl-bench-ID", "object": "chat.completion", "created": CREATED, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "".join(REPLY_WORDS), "refusal": None}}],
        "usage": USAGE, "system_fingerprint": "fp_bench"})


def _chunk(choices: list[dict], usage: dict | None = None) -> bytes:
    body = {"id": "chatcmpl-bench-ID", "object": "chat.completion.chunk", "created": CREATED,
            "model": MODEL, "system_fingerprint": "fp_bench", "choices": choices, "usage": usage}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def stream_frames() -> list[bytes]:
    """The streamed answer, one SSE frame per element (ids filled in per call)."""
    frames = [_chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    frames += [_chunk([{"index": 0, "delta": {"content": word}, "finish_reason": None}])
               for word in REPLY_WORDS]
    frames.append(_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    frames.append(_chunk([], USAGE))
    frames.append(b"data: [DONE]\n\n")
    return frames


COMPLETION = completion_body()
FRAMES = stream_frames()
MODELS = orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED,
                                                   "owned_by": "bench"}]})


def _with_id(data: bytes, call_id: bytes) -> bytes:
    return data.replace(b"chatcmpl-bench-ID", b"chatcmpl-bench-" + call_id, 1)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """A fixed completion, or a fixed SSE stream when the body asks for `stream: true`."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.json_response({"error": {"message": "body is not JSON", "type": "invalid_request_error"}},
                                 status=400)
    call_id = str(next(_ids)).encode()
    if not (isinstance(body, dict) and body.get("stream") is True):
        return web.Response(body=_with_id(COMPLETION, call_id), content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for frame in FRAMES:
        await response.write(_with_id(frame, call_id))
    await response.write_eof()
    return response


async def models(_request: web.Request) -> web.Response:
    """The model list (any key is accepted)."""
    return web.Response(body=MODELS, content_type="application/json")


def build_app() -> web.Application:
    """The upstream's routes; the base URL is the server's root (no /v1 prefix)."""
    app = web.Application()
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_get("/models", models)
    return app


def listening_socket(args: argparse.Namespace) -> socket.socket:
    """The inherited socket (--fd) or a new one on 127.0.0.1:--port."""
    if args.fd is not None:
        return socket.socket(fileno=args.fd)
    sock = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    return sock


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed (as the gateway uses), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(app: web.Application, sock: socket.socket) -> None:
    """Run `app` on `sock` until SIGTERM/SIGINT, on uvloop when it is installed."""
    web.run_app(app, sock=sock, access_log=None, print=None, shutdown_timeout=2, loop=new_event_loop())


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="an inherited, listening socket")
    where.add_argument("--port", type=int, help="bind 127.0.0.1:PORT (0: any free port)")
    serve(build_app(), listening_socket(parser.parse_args()))


if __name__ == "__main__":
    main()

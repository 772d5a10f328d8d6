"""The floor of a Python gateway: an aiohttp server that forwards the body and relays the answer.

`POST /v1/chat/completions` is sent on to `<upstream>/chat/completions` with the upstream's key
instead of the client's, over one pooled client session; a streamed answer is relayed as its bytes
arrive, any other answer whole. No parsing, no auth, no accounting: what remains is the HTTP work
every gateway does.

    python bench/passthrough_proxy.py --fd N --upstream URL --key KEY
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from fast_upstream import new_event_loop

RELAYED_HEADERS = ("Content-Type", "Cache-Control")
SESSION = web.AppKey("session", aiohttp.ClientSession)
URL = web.AppKey("url", str)
AUTHORIZATION = web.AppKey("authorization", str)


async def forward(request: web.Request) -> web.StreamResponse:
    """Send the body upstream and relay status, content type and body."""
    headers = {"Authorization": request.app[AUTHORIZATION], "Content-Type": "application/json"}
    body = await request.read()
    async with request.app[SESSION].post(request.app[URL], data=body, headers=headers) as upstream:
        relayed = {h: upstream.headers[h] for h in RELAYED_HEADERS if h in upstream.headers}
        if not upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
            return web.Response(status=upstream.status, body=await upstream.read(), headers=relayed)
        response = web.StreamResponse(status=upstream.status, headers=relayed)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def healthz(_request: web.Request) -> web.Response:
    """200 once the proxy serves (the benchmark waits for it)."""
    return web.Response(text="ok")


def build_app(upstream: str, key: str) -> web.Application:
    """The proxy's one route, with a client session opened and closed with the app."""
    app = web.Application()
    app[URL] = upstream.rstrip("/") + "/chat/completions"
    app[AUTHORIZATION] = f"Bearer {key}"

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(client_session)
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    """Parse the command line and serve on the inherited socket until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="an inherited, listening socket")
    parser.add_argument("--upstream", required=True, help="the upstream's base URL")
    parser.add_argument("--key", required=True, help="the bearer key to send upstream")
    args = parser.parse_args()
    web.run_app(build_app(args.upstream, args.key), sock=socket.socket(fileno=args.fd), access_log=None,
                print=None, shutdown_timeout=2, loop=new_event_loop())


if __name__ == "__main__":
    main()

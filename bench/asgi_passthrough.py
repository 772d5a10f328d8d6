"""The pass-through as a bare ASGI app, to measure what each ASGI server costs (bench/server_stacks.py).

The same work as bench/passthrough_proxy.py (read the body, forward it upstream with the upstream's
key over one pooled aiohttp session, relay the answer, streamed or whole), written against ASGI
directly, with no framework, so the rows of server_stacks.py differ only in the server underneath.
Its upstream and key come from BENCH_UPSTREAM and BENCH_KEY.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

Scope = dict[str, Any]


class PassThrough:
    """POST /v1/chat/completions forwarded upstream; GET /healthz answers 200."""

    def __init__(self, upstream: str, key: str) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.session is None:  # a server without lifespan (none of those measured here)
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with self.session.post(self.url, data=body, headers=self.headers) as upstream:
            content_type = upstream.headers.get("Content-Type", "application/json")
            headers = [(b"content-type", content_type.encode())]
            if not content_type.startswith("text/event-stream"):
                answer = await upstream.read()
                headers.append((b"content-length", str(len(answer)).encode()))
                await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
                await send({"type": "http.response.body", "body": answer})
                return
            await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = PassThrough(os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:1"), os.environ.get("BENCH_KEY", ""))

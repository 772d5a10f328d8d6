"""Signing in through the dashboard's form over HTTP, as a browser does (CSRF cookie, token, Origin)."""

import re

import httpx

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def form_client(base_url: str, local_address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client whose connections come from `local_address` (any 127.x.y.z reaches the server)."""
    return httpx.AsyncClient(base_url=base_url, timeout=60, follow_redirects=False,
                             transport=httpx.AsyncHTTPTransport(local_address=local_address))


async def submit_login(client: httpx.AsyncClient, email: str, password: str,
                       headers: dict[str, str] | None = None) -> httpx.Response:
    """GET /login for a fresh CSRF token, then POST the form with this site's Origin."""
    page = await client.get("/login")
    match = _TOKEN.search(page.text)
    assert match, page.text
    return await client.post("/login", data={"email": email, "password": password,
                                              "csrf_token": match.group(1)},
                             headers={"Origin": str(client.base_url).rstrip("/"), **(headers or {})})

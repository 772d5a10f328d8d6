"""`/<path>/` redirects to `/<path>` when only the latter is a route, by a relative Location.

Starlette's own redirect_slashes builds an absolute URL from the request's Host header, so a forged
Host sends the browser elsewhere; this one never names a host.
"""

from urllib.parse import quote

from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send


def _routed(router: Router, scope: Scope) -> bool:
    return any(route.matches(scope)[0] != Match.NONE for route in router.routes)


class RelativeSlashRedirect:
    """ASGI middleware: a 307 to the path without its trailing slash(es), when nothing routes the path as
    sent and something routes it without them (the app is built with redirect_slashes=False)."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Redirect, or pass the request on unchanged."""
        path = scope["path"] if scope["type"] == "http" else ""
        target = path.rstrip("/")
        # "//host" would be a protocol-relative URL: another site.
        if (path.endswith("/") and target and not target.startswith("//")
                and not _routed(self.router, scope) and _routed(self.router, {**scope, "path": target})):
            query = scope.get("query_string", b"").decode("latin-1")
            location = quote(target) + (f"?{query}" if query else "")
            await RedirectResponse(location, status_code=307)(scope, receive, send)
            return
        await self.app(scope, receive, send)

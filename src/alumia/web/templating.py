"""Jinja2 templates for the dashboard, with the one money formatter every page uses."""

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from alumia.domain.money import format_usd

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["usd"] = format_usd  # microcents -> "$1.23"; the only place money is formatted


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """A page; every template gets the request (for url_for) and the context."""
    return templates.TemplateResponse(request, name, context, status_code=status)


def render_error(request: Request, status: int, message: str) -> HTMLResponse:
    """An error page: a short message, never request data."""
    return render(request, "error.html", {"status": status, "message": message}, status)

"""/{org_slug}/agents and /{org_slug}/agents/{id}: list, create, edit, deactivate, delete.

No key field and no per-agent BYOK toggle (docs/product.md: BYOK matches by provider): the route
column only reports what BYOK-by-provider decides for the agent's model. Anything key-like typed into
an agent is refused by services.agents and never shown again (it is redacted before re-rendering).
"""

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from alumia.container import Services, services_of
from alumia.domain.permissions import Permission
from alumia.errors import AppError
from alumia.redact import redact
from alumia.services import agents
from alumia.web.lab_pages import MemberDep, model_groups, page_context
from alumia.web.session import Member, check_csrf
from alumia.web.templating import render

router = APIRouter(include_in_schema=False)
# The service names fields as the API does; the page names them as its labels do.
_LABELS = {"systemPrompt:": "System prompt:", "description:": "Description:", "name:": "Name:",
           "model:": "Model:", "body:": "This agent:"}


def _for_page(message: str) -> str:
    for field, label in _LABELS.items():
        if message.startswith(field):
            return label + message[len(field):]
    return message


async def _form(request: Request, who: Member) -> dict[str, str]:
    """The posted form's text fields, after its CSRF token is checked."""
    form = await request.form()
    check_csrf(request, who.user, str(form.get("csrf_token", "")))
    return {name: value for name, value in form.items() if isinstance(value, str) and name != "csrf_token"}


async def _list_page(request: Request, who: Member, *, error: str | None = None,
                     draft: dict[str, Any] | None = None, status: int = 200) -> Response:
    gw: Services = services_of(request)
    groups = await model_groups(gw, who)
    routes = {m["id"]: m for g in groups for m in g["models"]}
    items = await agents.list_agents(gw.db, who.principal)
    for agent in items:
        agent["route"] = routes.get(agent["model"], {"route": "unavailable", "mark": "no key"})
    default_model = items[0]["model"] if items else ""
    return render(request, "agents.html", page_context(
        who, "agents", agents=items, groups=groups, error=error,
        draft=draft or {"name": "", "model": default_model},
        notice="Agent deleted." if request.query_params.get("deleted") else None), status)


@router.get("/{org_slug}/agents")
async def agents_page(request: Request, who: MemberDep) -> Response:
    """The org's agents, the default one (Ala) first, and a small form for a new one."""
    return await _list_page(request, who)


@router.post("/{org_slug}/agents")
async def create_agent(request: Request, who: MemberDep) -> Response:
    """Create an agent from a name and a model, then open its page to fill in the rest."""
    form = await _form(request, who)
    body = {"name": form.get("name", ""), "model": form.get("model", "")}
    try:
        agent = await agents.create_agent(services_of(request).db, services_of(request).catalog,
                                          who.principal, body)
    except AppError as error:
        if error.status not in (409, 422):
            raise
        return await _list_page(request, who, error=_for_page(error.message), status=error.status,
                                draft={k: redact(v) for k, v in body.items()})
    return RedirectResponse(f"/{who.principal.org_slug}/agents/{quote(agent['id'])}?created=1",
                            status_code=303)


async def _agent_page(request: Request, who: Member, agent: dict[str, Any], *, error: str | None = None,
                      status: int = 200) -> Response:
    gw: Services = services_of(request)
    notice = None
    if request.query_params.get("saved"):
        notice = "Saved."
    elif request.query_params.get("created"):
        notice = "Agent created. Give it a description and a system prompt, then save."
    return render(request, "agent.html", page_context(
        who, "agents", agent=agent, groups=await model_groups(gw, who), error=error, notice=notice,
        can_delete=who.principal.may(Permission.DELETE_AGENTS) and not agent["isDefault"]), status)


@router.get("/{org_slug}/agents/{agent_id}")
async def agent_page(request: Request, who: MemberDep, agent_id: str) -> Response:
    """Edit one agent: name, description, model, system prompt, active."""
    agent = await agents.get_agent(services_of(request).db, who.principal, agent_id)
    return await _agent_page(request, who, agent)


@router.post("/{org_slug}/agents/{agent_id}")
async def save_agent(request: Request, who: MemberDep, agent_id: str) -> Response:
    """Save the edit form; a refusal re-renders it with the message, any key-like text redacted."""
    gw: Services = services_of(request)
    form = await _form(request, who)
    body = {"name": form.get("name", ""), "description": form.get("description", ""),
            "model": form.get("model", ""), "systemPrompt": form.get("system_prompt", ""),
            "isActive": form.get("is_active") == "on"}
    try:
        agent = await agents.update_agent(gw.db, gw.catalog, who.principal, agent_id, body)
    except AppError as error:
        if error.status not in (409, 422):
            raise
        stored = await agents.get_agent(gw.db, who.principal, agent_id)
        draft = {**stored, **{k: redact(v) if isinstance(v, str) else v for k, v in body.items()}}
        return await _agent_page(request, who, draft, error=_for_page(error.message), status=error.status)
    return RedirectResponse(f"/{who.principal.org_slug}/agents/{quote(agent['id'])}?saved=1",
                            status_code=303)


@router.post("/{org_slug}/agents/{agent_id}/delete")
async def delete_agent(request: Request, who: MemberDep, agent_id: str) -> Response:
    """Soft-delete an agent (owners and admins; never the default agent)."""
    await _form(request, who)
    await agents.delete_agent(services_of(request).db, who.principal, agent_id)
    return RedirectResponse(f"/{who.principal.org_slug}/agents?deleted=1", status_code=303)

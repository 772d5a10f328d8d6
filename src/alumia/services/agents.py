"""Agents: the default agent Ala, create/edit/soft-delete, and refusing anything key-like in them.

Keys are managed only in Billing (docs/product.md: agent pages and the lab never take a key), so an
agent body carrying a key-like field or value is refused, never stored.
"""

import re
from typing import Any

from alumia.clock import iso, new_id, utcnow
from alumia.domain.catalog import Catalog
from alumia.domain.permissions import Permission
from alumia.errors import AppError, ErrorCode
from alumia.redact import looks_like_key
from alumia.services.accounts import Principal
from alumia.storage import agents as rows
from alumia.storage.db import Database

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Agent ids are UUIDs and an agent is found by id or slug, so a slug of that shape could name another agent.
_ID_SHAPED = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_KEYISH_FIELD = re.compile(r"(api[_-]?key|secret|token|password|credential|^key$)", re.IGNORECASE)
_FIELDS = {"name": "name", "description": "description", "model": "model", "systemPrompt": "system_prompt",
           "isActive": "is_active"}


def agent_json(row: dict[str, Any]) -> dict[str, Any]:
    """An agent as the API shows it."""
    return {"id": row["id"], "orgId": row["org_id"], "name": row["name"], "slug": row["slug"],
            "description": row["description"], "model": row["model"], "systemPrompt": row["system_prompt"],
            "isActive": row["is_active"], "isDefault": row["is_default"],
            "createdAt": iso(row["created_at"]), "updatedAt": iso(row["updated_at"])}


def _refuse_keys(value: Any, org_slug: str, path: str = "") -> None:
    """422 for a field named like a key or a value shaped like one, anywhere in the body."""
    message = (f"agents never take a provider key: add it in Billing (/{org_slug}/billing), "
               f"where BYOK keys are managed for the whole org")
    if isinstance(value, dict):
        for name, inner in value.items():
            if _KEYISH_FIELD.search(str(name)):
                raise AppError(ErrorCode.VALIDATION_ERROR, f"{path}{name}: {message}")
            _refuse_keys(inner, org_slug, f"{path}{name}.")
    elif isinstance(value, list):
        for inner in value:
            _refuse_keys(inner, org_slug, path)
    elif isinstance(value, str) and looks_like_key(value):
        raise AppError(ErrorCode.VALIDATION_ERROR, f"{path.rstrip('.') or 'body'}: {message}")


def _clean(body: dict[str, Any], catalog: Catalog, *, partial: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    unknown = set(body) - set(_FIELDS) - {"slug"}
    if unknown:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"unknown field(s): {', '.join(sorted(unknown))}")
    for field, column in _FIELDS.items():
        if field not in body:
            continue
        value = body[field]
        if field == "isActive":
            if not isinstance(value, bool):
                raise AppError(ErrorCode.VALIDATION_ERROR, "isActive must be true or false")
        elif not isinstance(value, str):
            raise AppError(ErrorCode.VALIDATION_ERROR, f"{field} must be a string")
        elif field == "name" and not 1 <= len(value.strip()) <= 100:
            raise AppError(ErrorCode.VALIDATION_ERROR, "name must be 1-100 characters")
        elif field == "model":
            model = catalog.model(value)
            if model is None:
                raise AppError(ErrorCode.VALIDATION_ERROR,
                               "model must be a model id from the catalog (GET /v1/models)")
            value = model.id  # an alias is stored as the catalog id it names
        elif field in ("description", "systemPrompt") and len(value) > 20_000:
            raise AppError(ErrorCode.VALIDATION_ERROR, f"{field} must be at most 20000 characters")
        values[column] = value.strip() if field == "name" else value
    if not partial:
        for required in ("name", "model"):
            if required not in body:
                raise AppError(ErrorCode.VALIDATION_ERROR, f"{required} is required")
    return values


def _slug_from(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]
    return slug or "agent"


async def list_agents(db: Database, principal: Principal) -> list[dict[str, Any]]:
    """The org's agents."""
    async with db.read() as conn:
        return [agent_json(r) for r in await rows.list_agents(conn, principal.org_id)]


async def get_agent(db: Database, principal: Principal, ref: str) -> dict[str, Any]:
    """One agent by id or slug."""
    async with db.read() as conn:
        row = await rows.agent_in_org(conn, principal.org_id, ref)
    if row is None:
        raise AppError(ErrorCode.NOT_FOUND, "no such agent in this org")
    return agent_json(row)


async def create_agent(db: Database, catalog: Catalog, principal: Principal,
                       body: dict[str, Any]) -> dict[str, Any]:
    """A new agent; its slug comes from the body or its name and is unique in the org."""
    _refuse_keys(body, principal.org_slug)
    values = _clean(body, catalog, partial=False)
    slug = body.get("slug", _slug_from(values["name"]))
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise AppError(ErrorCode.VALIDATION_ERROR, "slug must be lowercase letters, digits or dashes")
    if _ID_SHAPED.match(slug):
        raise AppError(ErrorCode.VALIDATION_ERROR, "slug must not have the shape of an agent id (a UUID)")
    now = utcnow()
    async with db.write() as conn:
        if await rows.slug_taken(conn, principal.org_id, slug):
            raise AppError(ErrorCode.CONFLICT, f"an agent with slug {slug!r} already exists in this org")
        agent_id = new_id()
        await rows.insert_agent(conn, {"id": agent_id, "org_id": principal.org_id, "slug": slug,
                                       "description": "", "system_prompt": "", "is_active": True, **values,
                                       "is_default": False, "created_at": now, "updated_at": now})
        row = await rows.agent_in_org(conn, principal.org_id, agent_id)
    assert row is not None
    return agent_json(row)


async def update_agent(db: Database, catalog: Catalog, principal: Principal, ref: str,
                       body: dict[str, Any]) -> dict[str, Any]:
    """Change an agent's name, description, model, system prompt or active state."""
    _refuse_keys(body, principal.org_slug)
    if "slug" in body:
        raise AppError(ErrorCode.VALIDATION_ERROR, "slug cannot be changed")
    values = _clean(body, catalog, partial=True)
    async with db.write() as conn:
        row = await rows.agent_in_org(conn, principal.org_id, ref)
        if row is None:
            raise AppError(ErrorCode.NOT_FOUND, "no such agent in this org")
        if values:
            await rows.update_agent(conn, row["id"], {**values, "updated_at": utcnow()})
        row = await rows.agent_in_org(conn, principal.org_id, row["id"])
    assert row is not None
    return agent_json(row)


async def delete_agent(db: Database, principal: Principal, ref: str) -> dict[str, Any]:
    """Soft-delete an agent (owners and admins); the default agent stays."""
    principal.require(Permission.DELETE_AGENTS, "deleting agents")
    async with db.write() as conn:
        row = await rows.agent_in_org(conn, principal.org_id, ref)
        if row is None:
            raise AppError(ErrorCode.NOT_FOUND, "no such agent in this org")
        if row["is_default"]:
            raise AppError(ErrorCode.CONFLICT,
                           f"{row['name']} is the org's default agent and cannot be deleted")
        await rows.soft_delete(conn, row["id"], utcnow())
    return {"id": row["id"], "deleted": True}

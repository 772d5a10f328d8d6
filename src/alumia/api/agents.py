"""/api/v1/agents: list, create, read, edit, soft-delete. Handlers stay thin."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from alumia.api.deps import JsonBody, PrincipalDep, ServicesDep
from alumia.api.envelope import ok
from alumia.services import agents

router = APIRouter(prefix="/api/v1/agents")


@router.get("")
async def list_agents(gw: ServicesDep, who: PrincipalDep) -> JSONResponse:
    """The org's agents, the default one first."""
    return ok({"items": await agents.list_agents(gw.db, who)})


@router.post("")
async def create_agent(gw: ServicesDep, who: PrincipalDep, body: JsonBody) -> JSONResponse:
    """A new agent; a body carrying anything key-like is refused."""
    return ok(await agents.create_agent(gw.db, gw.catalog, who, body), 201)


@router.get("/{ref}")
async def get_agent(gw: ServicesDep, who: PrincipalDep, ref: str) -> JSONResponse:
    """One agent, by id or slug."""
    return ok(await agents.get_agent(gw.db, who, ref))


@router.patch("/{ref}")
async def patch_agent(gw: ServicesDep, who: PrincipalDep, ref: str, body: JsonBody) -> JSONResponse:
    """Edit name, description, model, system prompt or active state."""
    return ok(await agents.update_agent(gw.db, gw.catalog, who, ref, body))


@router.delete("/{ref}")
async def delete_agent(gw: ServicesDep, who: PrincipalDep, ref: str) -> JSONResponse:
    """Soft-delete; the default agent cannot be deleted."""
    return ok(await agents.delete_agent(gw.db, who, ref))

"""/api/v1/billing/spending (+ /by-model, /by-agent, /by-project) and /transactions.csv. Thin handlers.

Query: `from` and `to`, inclusive `YYYY-MM-DD` UTC days (default this month; at most 366 days).
Figures and their meaning: services/reports.py.
"""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from alumia.api.deps import PrincipalDep, ServicesDep
from alumia.api.envelope import ok
from alumia.services import reports

router = APIRouter(prefix="/api/v1/billing")

FromDay = Annotated[str | None, Query(alias="from")]
ToDay = Annotated[str | None, Query()]


@router.get("/spending")
async def get_spending(gw: ServicesDep, who: PrincipalDep, from_: FromDay = None,
                       to: ToDay = None) -> JSONResponse:
    """The daily series, totals, service breakdown, and top models and agents."""
    return ok(await reports.overview(gw.db, who, reports.parse_range(from_, to)))


@router.get("/spending/by-model")
async def get_spending_by_model(gw: ServicesDep, who: PrincipalDep, from_: FromDay = None,
                                to: ToDay = None) -> JSONResponse:
    """Spend per model (service charges under model null)."""
    return ok(await reports.by_model(gw.db, who, reports.parse_range(from_, to)))


@router.get("/spending/by-agent")
async def get_spending_by_agent(gw: ServicesDep, who: PrincipalDep, from_: FromDay = None,
                                to: ToDay = None) -> JSONResponse:
    """Spend per agent (no agent under agentId null)."""
    return ok(await reports.by_agent(gw.db, who, reports.parse_range(from_, to)))


@router.get("/spending/by-project")
async def get_spending_by_project(gw: ServicesDep, who: PrincipalDep, from_: FromDay = None,
                                  to: ToDay = None) -> JSONResponse:
    """Spend per project of the meter events (model calls under projectId null)."""
    return ok(await reports.by_project(gw.db, who, reports.parse_range(from_, to)))


@router.get("/transactions.csv")
async def get_transactions_csv(gw: ServicesDep, who: PrincipalDep, from_: FromDay = None,
                               to: ToDay = None) -> Response:
    """The range's ledger entries as CSV, oldest first, with a header row."""
    span = reports.parse_range(from_, to)
    text = await reports.transactions_csv(gw.db, who, span)
    filename = f"alumia-transactions-{span.first.isoformat()}-{span.last.isoformat()}.csv"
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})

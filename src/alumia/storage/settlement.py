"""One metered call's writes as ONE PostgreSQL statement: usage record, hold closed, balance, ledger.

The general path (services/metering.py) runs these as five statements in a transaction: seven round
trips with BEGIN and COMMIT. On PostgreSQL, data-modifying CTEs do the same in one statement, which is
atomic on its own (autocommit), so a platform call's metering costs one round trip. The hold is
closed only if still open, its amount is freed and the charge taken in one UPDATE of the org row, and
the ledger entry carries the balance that UPDATE returned; a duplicate request id or idempotency key
fails the whole statement, as it failed the whole transaction.

Row locks are taken hold first, then org, as `holds.close` does, and a reservation only locks the org
row before inserting its own new hold, so these never wait on each other in a cycle.
"""

from datetime import datetime

from sqlalchemy import BigInteger, String, bindparam, func, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.storage.tables import Timestamp, holds, ledger_entries, orgs, usage_records

# Constants are written into the SQL: anonymous bound values inside DML CTEs are lost from the
# statement cache (SQLAlchemy then asks for a value nobody can name).
_OPEN = literal_column("'open'")
_ZERO = literal_column("0")


def _charge() -> object:
    return bindparam("s_charge", type_=BigInteger)


_CLOSED = (update(holds)
           .where(holds.c.id == bindparam("s_hold_id", type_=String), holds.c.status == _OPEN)
           .values(status=bindparam("s_hold_status", type_=String), charged_microcents=_charge(),
                   closed_at=bindparam("s_now", type_=Timestamp))
           .returning(holds.c.amount_microcents)
           .cte("closed"))
_MOVED = (update(orgs)
          .where(orgs.c.id == bindparam("u_org_id", type_=String))
          .values(balance_microcents=orgs.c.balance_microcents - _charge(),
                  held_microcents=orgs.c.held_microcents
                  - func.coalesce(select(_CLOSED.c.amount_microcents).scalar_subquery(), _ZERO))
          .returning(orgs.c.balance_microcents)
          .cte("moved"))
_RECORD = (insert(usage_records)
           .values({c.name: bindparam(f"u_{c.name}", type_=c.type) for c in usage_records.columns})
           .cte("record"))
_ENTRY = (insert(ledger_entries)
          .from_select(["org_id", "type", "amount_microcents", "balance_after_microcents", "description",
                        "request_id", "idempotency_key", "created_at"],
                       select(bindparam("u_org_id", type_=String), literal_column("'usage_charge'"),
                              -_charge(),
                              _MOVED.c.balance_microcents, bindparam("s_description", type_=String),
                              bindparam("u_id", type_=String), bindparam("s_idempotency_key", type_=String),
                              bindparam("s_now", type_=Timestamp))
                       .where(_charge() > _ZERO))
          .cte("entry"))
_SETTLE = (select(_MOVED.c.balance_microcents,
                  select(func.count()).select_from(_CLOSED).scalar_subquery().label("freed"))
           .add_cte(_RECORD).add_cte(_ENTRY))


async def settle(conn: AsyncConnection, record: dict, *, hold_id: str, hold_status: str, charge: int,
                 description: str, idempotency_key: str, now: datetime) -> tuple[int, bool]:
    """Write a platform call's usage record, close its hold and take its charge, in one statement.

    `record` is the usage_records row (its `id` is the request id). Returns the balance after and
    whether the hold was still open (False: the sweeper had expired it; the charge is taken anyway).
    """
    # Every name is prefixed: SQLAlchemy would take a parameter named like a column (id, org_id,
    # created_at) as a value to SET in the UPDATEs of the statement.
    params = {f"u_{name}": value for name, value in record.items()}
    row = (await conn.execute(_SETTLE, {**params, "s_hold_id": hold_id, "s_hold_status": hold_status,
                                        "s_charge": charge, "s_description": description,
                                        "s_idempotency_key": idempotency_key, "s_now": now})).one()
    return int(row.balance_microcents), bool(row.freed)


_ADMITTED = (update(orgs)
             .where(orgs.c.id == bindparam("r_org_id", type_=String),
                    orgs.c.balance_microcents - orgs.c.held_microcents
                    >= bindparam("r_amount", type_=BigInteger))
             .values(held_microcents=orgs.c.held_microcents + bindparam("r_amount", type_=BigInteger))
             .returning(orgs.c.id)
             .cte("admitted"))
_RESERVE = (insert(holds)
            .from_select(["id", "org_id", "amount_microcents", "status", "created_at", "expires_at"],
                         select(bindparam("r_hold_id", type_=String), _ADMITTED.c.id,
                                bindparam("r_amount", type_=BigInteger), _OPEN,
                                bindparam("r_now", type_=Timestamp),
                                bindparam("r_expires_at", type_=Timestamp)))
            .returning(holds.c.id))


async def reserve(conn: AsyncConnection, *, hold_id: str, org_id: str, amount: int, now: datetime,
                  expires_at: datetime) -> bool:
    """`holds.reserve` as one statement: the conditional UPDATE decides, the INSERT follows only if it did."""
    admitted = (await conn.execute(_RESERVE, {"r_hold_id": hold_id, "r_org_id": org_id, "r_amount": amount,
                                              "r_now": now, "r_expires_at": expires_at})).first()
    return admitted is not None


"""Conversation state for the Responses door: stored responses, scoped to their org, kept for the
retention the settings give (`ALUMIA_RESPONSES_RETENTION_DAYS`).

A stored response is its Response object and the input items of its request. `previous_response_id`
rebuilds a conversation by following those links back: each earlier response's input items, then its
output, oldest first. A response whose retention has passed is absent everywhere, as if deleted, and
so is another org's. What is stored is the org's data: nothing here logs it.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

import orjson

from alumia.clock import utcnow
from alumia.errors import AppError, ErrorCode
from alumia.storage import responses as table
from alumia.storage.db import Database

log = logging.getLogger("alumia.responses")

# How many earlier responses one conversation may chain through; far beyond any model's context.
MAX_CHAIN = 1000


def not_found(response_id_field: str = "response") -> AppError:
    """The 404 for a response that is not the caller's (or no longer kept); it says nothing more."""
    return AppError(ErrorCode.NOT_FOUND,
                    f"{response_id_field}: no stored response with this id; responses are "
                    "kept for a limited time and only for the org that made them")


def _since(retention_days: int) -> datetime:
    return utcnow() - timedelta(days=retention_days)


async def conversation(db: Database, org_id: str, previous_id: str,
                       retention_days: int) -> list[dict[str, Any]]:
    """The items of the conversation up to and including response `previous_id`, oldest first.

    NOT_FOUND naming `previous_response_id` when it, or a response it follows, is not the org's or is
    no longer kept: a conversation with a hole in it is not sent.
    """
    since = _since(retention_days)
    turns: list[list[dict[str, Any]]] = []
    current: str | None = previous_id
    async with db.read() as conn:
        while current is not None:
            if len(turns) >= MAX_CHAIN:
                raise AppError(ErrorCode.BAD_REQUEST,
                               f"previous_response_id: the conversation is longer than "
                               f"{MAX_CHAIN} responses")
            row = await table.response_of(conn, org_id, current, since)
            if row is None:
                raise not_found("previous_response_id")
            response = orjson.loads(row["response"])
            turns.append([*orjson.loads(row["input_items"]), *response.get("output", [])])
            current = row["previous_response_id"]
    return [item for turn in reversed(turns) for item in turn]


async def store(db: Database, org_id: str, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """Keep a response and its input items for the org."""
    async with db.write() as conn:
        await table.insert_response(conn, {
            "id": response["id"], "org_id": org_id,
            "previous_response_id": response.get("previous_response_id"),
            "response": orjson.dumps(response).decode(), "input_items": orjson.dumps(items).decode(),
            "created_at": utcnow()})


async def retrieve(db: Database, org_id: str, response_id: str,
                   retention_days: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The org's stored Response and its input items; NOT_FOUND otherwise."""
    async with db.read() as conn:
        row = await table.response_of(conn, org_id, response_id, _since(retention_days))
    if row is None:
        raise not_found()
    return orjson.loads(row["response"]), orjson.loads(row["input_items"])


async def delete(db: Database, org_id: str, response_id: str, retention_days: int) -> None:
    """Delete the org's stored response and its input items; NOT_FOUND when there is none."""
    async with db.write() as conn:
        deleted = await table.delete_response(conn, org_id, response_id, _since(retention_days))
    if not deleted:
        raise not_found()


async def delete_expired(db: Database, retention_days: int) -> int:
    """Delete every stored response past its retention; how many (the sweeper's part)."""
    async with db.write() as conn:
        count = await table.delete_older(conn, _since(retention_days))
    if count:
        log.info("deleted %s stored response(s) past their retention", count)
    return count

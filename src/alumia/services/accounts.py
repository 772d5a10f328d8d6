"""Orgs, users and org API keys: creating them and telling who a key speaks for."""

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from alumia.clock import iso, new_id, utcnow
from alumia.config import Settings
from alumia.domain.api_keys import key_refusal
from alumia.domain.money import cents_to_microcents
from alumia.domain.permissions import Permission, holders, may
from alumia.errors import AppError, ErrorCode
from alumia.services.passwords import hash_password
from alumia.storage import accounts, agents
from alumia.storage.db import Database
from alumia.storage.ledger import NewEntry, append

ROLES = ("owner", "admin", "member")
DEFAULT_SCOPES = "gateway management"
# billing:meter: may report infrastructure usage events (services/meters.py); given only on request.
KNOWN_SCOPES = frozenset({"gateway", "management", "billing:meter"})
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_RESERVED_SLUGS = frozenset({"api", "v1", "login", "logout", "healthz", "metrics", "static", "_sim"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an API key speaks for."""

    api_key_id: str | None  # None for a signed-in person (a browser session)
    org_id: str
    org_slug: str
    user_id: str
    role: str
    scopes: frozenset[str]

    def may(self, permission: Permission) -> bool:
        """Whether this member holds `permission` (domain/permissions.py)."""
        return may(self.role, permission)

    def require(self, permission: Permission, to: str) -> None:
        """FORBIDDEN unless this member holds `permission`; `to` names what is refused ("deleting agents")."""
        if not self.may(permission):
            raise AppError(ErrorCode.FORBIDDEN, f"{to} needs the {holders(permission)} role")


def hash_api_key(key: str) -> str:
    """API keys are stored as their SHA-256 hex digest."""
    return hashlib.sha256(key.encode()).hexdigest()


def _new_api_key(settings: Settings) -> str:
    env = "live" if settings.is_production else "test"
    return f"alm_{env}_{secrets.token_hex(24)}"


def _check_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise AppError(ErrorCode.VALIDATION_ERROR, "email must be a valid address")
    return email


@dataclass(frozen=True, slots=True)
class _NewPassword:
    """A one-time password and its hash, made before the write transaction (argon2 takes ~200 ms)."""

    plaintext: str
    hash: str


async def _new_password() -> _NewPassword:
    password = secrets.token_urlsafe(12)
    return _NewPassword(plaintext=password, hash=await hash_password(password))


async def _find_or_create_user(conn: AsyncConnection, email: str, password: _NewPassword,
                               now: datetime) -> tuple[str, str | None]:
    """The user with this email, or a new one with `password` (None for an existing user)."""
    user = await accounts.user_by_email(conn, email)
    if user is not None:
        return user["id"], None
    user_id = new_id()
    await accounts.insert_user(conn, user_id=user_id, email=email, password_hash=password.hash, now=now)
    return user_id, password.plaintext


async def create_org(db: Database, settings: Settings, *, slug: str, owner_email: str,
                     name: str | None = None) -> dict[str, Any]:
    """Create an org, its owner (with a one-time password) and, while the offer is open, the $10 credit."""
    if not _SLUG.match(slug) or slug in _RESERVED_SLUGS:
        raise AppError(ErrorCode.VALIDATION_ERROR,
                       "slug must be 2-63 lowercase letters, digits or dashes and not a reserved word")
    email = _check_email(owner_email)
    password = await _new_password()  # unused when the owner already exists
    now = utcnow()
    org_id = new_id()
    try:
        async with db.write() as conn:
            await accounts.insert_org(conn, org_id=org_id, slug=slug, name=name or slug, now=now)
            user_id, one_time = await _find_or_create_user(conn, email, password, now)
            await accounts.insert_membership(conn, org_id=org_id, user_id=user_id, role="owner", now=now)
            await agents.insert_default_agent(conn, new_id(), org_id, now)
            if settings.early_bird_credit_cents and settings.early_bird_open(now.date()):
                await append(conn, NewEntry(
                    org_id=org_id, type="promo_credit",
                    amount_microcents=cents_to_microcents(settings.early_bird_credit_cents),
                    description="Early-bird signup credit",
                    idempotency_key=f"promo:early-bird:{org_id}"), now)
    except IntegrityError as exc:
        raise AppError(ErrorCode.CONFLICT, f"an org with slug {slug!r} already exists") from exc
    return {"id": org_id, "slug": slug, "name": name or slug, "owner": {"id": user_id, "email": email},
            "password": one_time}


async def create_user(db: Database, *, org_slug: str, email: str, role: str) -> dict[str, Any]:
    """Add a user (new, with a one-time password, or existing) to an org with a role."""
    if role not in ROLES:
        raise AppError(ErrorCode.VALIDATION_ERROR, f"role must be one of {', '.join(ROLES)}")
    email = _check_email(email)
    new_password = await _new_password()  # unused when the user already exists
    now = utcnow()
    async with db.write() as conn:
        org = await accounts.org_by_slug(conn, org_slug)
        if org is None:
            raise AppError(ErrorCode.NOT_FOUND, f"no org {org_slug!r}")
        user_id, password = await _find_or_create_user(conn, email, new_password, now)
        if password is None and await accounts.membership(conn, org["id"], user_id):
            raise AppError(ErrorCode.CONFLICT, f"{email} is already a member of {org_slug}")
        await accounts.insert_membership(conn, org_id=org["id"], user_id=user_id, role=role, now=now)
    return {"id": user_id, "email": email, "org": org_slug, "role": role, "password": password}


async def create_api_key(db: Database, settings: Settings, *, org_id: str, user_id: str, name: str,
                         scopes: str = DEFAULT_SCOPES) -> dict[str, Any]:
    """Create an org API key for a user; the plaintext is returned this once and never stored."""
    key = _new_api_key(settings)
    key_id = new_id()
    now = utcnow()
    async with db.write() as conn:
        await accounts.insert_api_key(conn, key_id=key_id, org_id=org_id, user_id=user_id, name=name,
                                      prefix=key[:12], key_hash=hash_api_key(key), scopes=scopes, now=now)
    return {"id": key_id, "name": name, "prefix": key[:12], "scopes": scopes.split(),
            "lastUsedAt": None, "createdAt": iso(now), "key": key}


async def create_api_key_for(db: Database, settings: Settings, *, org_slug: str,
                             user_email: str | None, name: str = "cli",
                             scopes: str = DEFAULT_SCOPES) -> dict[str, Any]:
    """The CLI's way in: a key for the org's owner, or for a named member, with `scopes`."""
    unknown = set(scopes.split()) - KNOWN_SCOPES
    if unknown or not scopes.split():
        raise AppError(ErrorCode.VALIDATION_ERROR,
                       f"scopes must be some of {', '.join(sorted(KNOWN_SCOPES))}")
    async with db.read() as conn:
        org = await accounts.org_by_slug(conn, org_slug)
        if org is None:
            raise AppError(ErrorCode.NOT_FOUND, f"no org {org_slug!r}")
        if user_email is None:
            user = await accounts.owner_of(conn, org["id"])
        else:
            user = await accounts.user_by_email(conn, _check_email(user_email))
            if user and not await accounts.membership(conn, org["id"], user["id"]):
                user = None
        if user is None:
            raise AppError(ErrorCode.NOT_FOUND, "no such member in that org")
    result = await create_api_key(db, settings, org_id=org["id"], user_id=user["id"], name=name,
                                  scopes=" ".join(dict.fromkeys(scopes.split())))
    return {**result, "org": org_slug, "user": user["email"]}


async def authenticate(db: Database, bearer: str | None, *, production: bool) -> Principal:
    """The principal of a `Bearer alm_...` key allowed in this environment, or UNAUTHORIZED."""
    if refusal := key_refusal(bearer, production=production):
        raise AppError(ErrorCode.UNAUTHORIZED, refusal)
    assert bearer is not None
    async with db.read() as conn:
        row = await accounts.principal_by_key_hash(conn, hash_api_key(bearer))
    if row is None:
        raise AppError(ErrorCode.UNAUTHORIZED, "this API key is not valid or has been revoked")
    return Principal(api_key_id=row["api_key_id"], org_id=row["org_id"], org_slug=row["org_slug"],
                     user_id=row["user_id"], role=row["role"], scopes=frozenset(row["scopes"].split()))


async def revoke_api_key(db: Database, principal: Principal, key_id: str) -> dict[str, Any]:
    """Revoke one of the org's API keys (members only their own; another org's id is not found)."""
    async with db.write() as conn:
        row = await accounts.api_key_in_org(conn, principal.org_id, key_id)
        if row is None or (row["user_id"] != principal.user_id
                           and not principal.may(Permission.SEE_AND_REVOKE_ANY_API_KEY)):
            raise AppError(ErrorCode.NOT_FOUND, "no such API key in this org")
        await accounts.revoke_api_key(conn, key_id, utcnow())
    return {"id": key_id, "revoked": True}


def api_key_json(row: dict[str, Any]) -> dict[str, Any]:
    """An API key as listed: by prefix, never the key."""
    return {"id": row["id"], "name": row["name"], "prefix": row["prefix"], "scopes": row["scopes"].split(),
            "lastUsedAt": iso(row["last_used_at"]), "createdAt": iso(row["created_at"])}


async def list_api_keys(db: Database, principal: Principal) -> list[dict[str, Any]]:
    """Owners and admins see every live key of the org; members see their own."""
    async with db.read() as conn:
        rows = await accounts.list_api_keys(conn, principal.org_id,
                                            None if principal.may(Permission.SEE_AND_REVOKE_ANY_API_KEY)
                                            else principal.user_id)
    return [api_key_json(r) for r in rows]


async def reset_password(db: Database, email: str) -> str:
    """Give a user a new random password and return it (the demo's login is printed at every start)."""
    email = _check_email(email)
    password = await _new_password()
    async with db.write() as conn:
        user = await accounts.user_by_email(conn, email)
        if user is None:
            raise AppError(ErrorCode.NOT_FOUND, f"no user {email}")
        await accounts.set_password(conn, user["id"], password.hash)
    return password.plaintext


async def list_orgs(db: Database) -> list[accounts.OrgRow]:
    """Every org, for the operator's `alumia org list`."""
    async with db.read() as conn:
        return await accounts.list_orgs(conn)


async def org_api_keys(db: Database, org_slug: str, *,
                       include_revoked: bool = False) -> list[accounts.ApiKeyRow]:
    """An org's API keys for the operator (`alumia apikey list`): every member's, never the keys."""
    async with db.read() as conn:
        org = await accounts.org_by_slug(conn, org_slug)
        if org is None:
            raise AppError(ErrorCode.NOT_FOUND, f"no org {org_slug!r}")
        return await accounts.api_key_rows(conn, org["id"], include_revoked=include_revoked)


@dataclass(frozen=True, slots=True)
class Revocation:
    """The key an operator revoked, and whether it had been revoked already (then nothing changed)."""

    key: accounts.ApiKeyRow
    already_revoked: bool


async def revoke_api_key_by_id(db: Database, key_id: str) -> Revocation:
    """Revoke any org's API key by id (`alumia apikey revoke`); revoking it again changes nothing."""
    async with db.write() as conn:
        before = await accounts.api_key_row(conn, key_id)
        if before is None:
            raise AppError(ErrorCode.NOT_FOUND, f"no API key {key_id!r}")
        await accounts.revoke_api_key(conn, key_id, utcnow())
        after = await accounts.api_key_row(conn, key_id)
    assert after is not None
    return Revocation(key=after, already_revoked=before.revoked_at is not None)


async def reset_member_password(db: Database, *, org_slug: str, email: str) -> str:
    """Give a member of an org a new random password and return it, this once.

    The org is asked for so that an operator cannot reset someone's password by mistyping an email that
    exists in another org.
    """
    email = _check_email(email)
    password = await _new_password()
    async with db.write() as conn:
        org = await accounts.org_by_slug(conn, org_slug)
        if org is None:
            raise AppError(ErrorCode.NOT_FOUND, f"no org {org_slug!r}")
        user = await accounts.user_by_email(conn, email)
        if user is None or not await accounts.membership(conn, org["id"], user["id"]):
            raise AppError(ErrorCode.NOT_FOUND, f"no member {email} in {org_slug}")
        await accounts.set_password(conn, user["id"], password.hash)
    return password.plaintext

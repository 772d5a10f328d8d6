"""Signing in and out of the dashboard, and who a browser session is in an org."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from alumia.clock import utcnow
from alumia.errors import AppError, ErrorCode
from alumia.services.accounts import Principal
from alumia.services.passwords import Passwords
from alumia.services.sign_in_guard import SignInGuard
from alumia.storage import accounts, sessions
from alumia.storage.db import Database

SESSION_LIFETIME = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class SessionUser:
    """A signed-in person and the orgs they belong to."""

    user_id: str
    email: str
    csrf_token: str
    orgs: list[dict[str, Any]]

    def principal(self, org_slug: str) -> Principal | None:
        """Who this person is in the org with that slug, or None when not a member."""
        for org in self.orgs:
            if org["slug"] == org_slug:
                return Principal(api_key_id=None, org_id=org["id"], org_slug=org["slug"],
                                 user_id=self.user_id, role=org["role"],
                                 scopes=frozenset({"gateway", "management"}))
        return None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def sign_in(db: Database, passwords: Passwords, guard: SignInGuard, *, email: str, password: str,
                  client_host: str) -> str:
    """A new session token for the right email and password; UNAUTHORIZED otherwise (same message).

    TOO_MANY_REQUESTS, before any check, while the account or the client address is throttled.
    An unknown email is checked against a dummy hash, so both paths cost the same.
    """
    email = email.strip().lower()
    attempt = guard.admit(email, client_host)
    try:
        async with db.read() as conn:
            user = await accounts.user_by_email(conn, email)
        matched = await passwords.verify(user["password_hash"] if user else None, password)
    except BaseException:
        guard.void(attempt)  # no verdict on the password (database down, client gone): not a failure
        raise
    if not matched or user is None:
        guard.failed(attempt)
        raise AppError(ErrorCode.UNAUTHORIZED, "that email and password do not match")
    guard.succeeded(attempt)
    token, now = secrets.token_urlsafe(32), utcnow()
    async with db.write() as conn:
        await sessions.insert_session(conn, id_hash=_hash(token), user_id=user["id"],
                                      csrf_token=secrets.token_hex(32), now=now,
                                      expires_at=now + SESSION_LIFETIME)
    return token


async def session_user(db: Database, token: str | None) -> SessionUser | None:
    """The person behind a session cookie, or None."""
    if not token:
        return None
    async with db.read() as conn:
        row = await sessions.session_user(conn, _hash(token), utcnow())
        if row is None:
            return None
        orgs = await sessions.orgs_of_user(conn, row["user_id"])
    return SessionUser(user_id=row["user_id"], email=row["email"], csrf_token=row["csrf_token"], orgs=orgs)


async def sign_out(db: Database, token: str | None) -> None:
    """End the session (nothing to do without one)."""
    if token:
        async with db.write() as conn:
            await sessions.delete_session(conn, _hash(token))

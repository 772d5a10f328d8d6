"""Who may do what in an org: each permission named for what it allows, and the roles that hold it.

The one place these rules live: use cases ask `may(role, Permission.X)` (or the services' `require`)
before anything else. Today owners and admins hold every permission below and members none, but each
is its own name, so one can change without touching the others.
"""

from enum import Enum


class Permission(Enum):
    """What an org member may do beyond using the org (calls, their own keys, agents)."""

    MANAGE_BILLING = "change the org's money: deposits, BYOK keys, auto top-up"
    DELETE_AGENTS = "delete the org's agents"
    SEE_AND_REVOKE_ANY_API_KEY = "see and revoke every API key of the org, not only one's own"


_ROLES: dict[Permission, frozenset[str]] = {
    Permission.MANAGE_BILLING: frozenset({"owner", "admin"}),
    Permission.DELETE_AGENTS: frozenset({"owner", "admin"}),
    Permission.SEE_AND_REVOKE_ANY_API_KEY: frozenset({"owner", "admin"}),
}


def may(role: str, permission: Permission) -> bool:
    """Whether a member with `role` holds `permission`."""
    return role in _ROLES[permission]


def holders(permission: Permission) -> str:
    """The roles that hold `permission`, for people: "owner or admin"."""
    return " or ".join(sorted(_ROLES[permission], key=("owner", "admin", "member").index))

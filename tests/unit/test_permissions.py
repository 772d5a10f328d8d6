"""Who may do what: each permission by name, the roles that hold it, and the one refusal."""

import pytest

from alumia.domain.permissions import Permission, holders, may
from alumia.errors import AppError, ErrorCode
from alumia.services.accounts import Principal


@pytest.mark.parametrize("permission", list(Permission))
def test_owners_and_admins_hold_every_permission_and_members_none(permission: Permission) -> None:
    assert may("owner", permission) and may("admin", permission)
    assert not may("member", permission) and not may("", permission) and not may("Owner", permission)
    assert holders(permission) == "owner or admin"


def test_require_refuses_with_forbidden_naming_what_was_refused() -> None:
    member = Principal(api_key_id=None, org_id="o", org_slug="acme", user_id="u", role="member",
                       scopes=frozenset())
    with pytest.raises(AppError) as refused:
        member.require(Permission.DELETE_AGENTS, "deleting agents")
    assert (refused.value.code, refused.value.status) == (ErrorCode.FORBIDDEN, 403)
    assert refused.value.message == "deleting agents needs the owner or admin role"
    admin = Principal(api_key_id=None, org_id="o", org_slug="acme", user_id="u", role="admin",
                      scopes=frozenset())
    admin.require(Permission.DELETE_AGENTS, "deleting agents")  # no error

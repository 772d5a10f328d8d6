"""The billing page's one-time notice comes from a cookie the browser can edit: any value is harmless."""

import json
from urllib.parse import quote

import pytest

from harness import Server, new_org_with_login
from login_form import form_client, submit_login


@pytest.mark.parametrize("notice", [
    {"kind": []}, {"kind": {}}, {"kind": None}, {"kind": 7}, {"kind": "no-such-kind"}, [], "text", 12,
    {"kind": "deposit", "amountCents": True},
])
async def test_a_tampered_notice_cookie_is_ignored(server: Server, notice: object) -> None:
    org, password = await new_org_with_login(server)
    async with form_client(server.base_url) as web:
        assert (await submit_login(web, org.owner_email, password)).status_code == 303
        web.cookies.set("alumia_notice", quote(json.dumps(notice)), path=f"/{org.slug}/billing")
        page = await web.get(f"/{org.slug}/billing")
    assert page.status_code == 200, page.text[:500]
    assert 'role="status"' not in page.text

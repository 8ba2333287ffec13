"""The help page's whole journey in a real browser against a real `kbai serve`, on both backends.

An admin grants Manage API Tokens to a role; a developer with that role opens System Settings,
clicks Open API Keys, creates a token (name, two scopes, 90 days), copies it, uses it, finds it in
the table, revokes it, and the token is refused from then on.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from kbai import tokenformat as fmt
from kbai.services import Services
from tests.conftest import LiveServer
from tests.ui.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DEV_EMAIL,
    DEV_PASSWORD,
    confirm_dialog,
    login,
    new_page,
    seed_acme,
    shot,
)

pytestmark = pytest.mark.browser

MASK = "kbai_pk_" + "0" * 64


def test_help_page_journey(browser: object, ui_server: LiveServer, ui_services: Services, backend: str) -> None:
    acme = seed_acme(ui_services)
    screenshots = backend == "sqlite"

    # -- the admin: System Settings → Roles → open the role → check Manage API Tokens → Save
    admin = new_page(browser, ui_server)
    login(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.get_by_role("link", name="Roles").first.click()
    admin.get_by_role("link", name="Developers", exact=True).click()
    assert admin.url.endswith(f"/system-settings/roles/{acme.role_id}")
    developer_group = admin.get_by_role("group", name="Developer")
    box = developer_group.get_by_label("Manage API Tokens")
    assert not box.is_checked()
    box.check()
    admin.get_by_role("button", name="Save").click()
    admin.get_by_text("Saved.").wait_for()
    assert admin.get_by_label("Manage API Tokens").is_checked()
    if screenshots:
        shot(admin, "role-edit")
    admin.context.close()

    # -- the developer: System Settings → the Developer API banner → Open API Keys
    page = new_page(browser, ui_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto("/system-settings")
    banner = page.get_by_role("region", name="Developer API")
    banner.get_by_role("link", name="Open API Keys").click()
    page.wait_for_url("**/system-settings/api-keys")
    page.get_by_text("0 of 10 active tokens").wait_for()

    page.get_by_label("Name").fill("Zapier production")
    page.get_by_label("View users").check()
    page.get_by_label("View roles").check()
    ninety = page.get_by_role("radio", name=re.compile(r"^90 days"))
    assert ninety.is_checked(), "90 days is preselected"
    page.get_by_role("button", name="Create token").click()

    card = page.get_by_role("region", name=re.compile("Token .Zapier production. created"))
    card.wait_for()
    assert "It will not be shown again" in card.inner_text()
    token = page.locator("#new-token").inner_text().strip()
    well_formed = fmt.is_well_formed(token)
    assert well_formed, "the page shows a kbai_pk_ token"
    card.get_by_role("button", name="Copy").click()
    card.get_by_role("button", name="Copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    same = copied == token
    assert same, "the clipboard holds the token shown on the page"
    if screenshots:
        page.evaluate("m => { document.querySelector('#new-token').textContent = m; }", MASK)
        shot(page, "api-keys-created-token")

    # -- the token works against the API
    with httpx.Client(base_url=ui_server.url, timeout=10) as api:
        me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
        assert me.json()["scopes"] == ["users.read", "roles.read"]
        assert me.json()["user"]["email"] == DEV_EMAIL

    # -- the table: the six columns the help page names, Last used filled in once the use is flushed
    page.goto("/system-settings/api-keys")
    headers = [h.strip() for h in page.locator("table.tokens-table thead th").all_inner_texts()]
    assert headers[:6] == ["Name", "Prefix", "Scopes", "Last used", "Expires", "Status"]
    row = page.locator("table.tokens-table tbody tr", has_text="Zapier production")
    cells = dict(zip(headers[:6], [c.strip() for c in row.locator("td").all_inner_texts()[:6]], strict=True))
    assert cells["Prefix"] == token[:12]
    assert "users.read" in cells["Scopes"] and "roles.read" in cells["Scopes"]
    expected = datetime.now(UTC) + timedelta(days=90)
    assert cells["Expires"] in {(expected + timedelta(days=d)).strftime("%b %-d, %Y") for d in (-1, 0)}
    assert cells["Status"] == "Active"
    deadline = time.monotonic() + 10
    while cells["Last used"] == "Never" and time.monotonic() < deadline:
        time.sleep(0.3)
        page.reload()
        cells["Last used"] = row.locator("td").nth(3).inner_text().strip()
    assert cells["Last used"].endswith("UTC"), cells["Last used"]

    # -- revoke, accepting the confirmation (a dialog that names the token)
    row.get_by_role("button", name=re.compile("^Revoke")).click()
    said = confirm_dialog(page)
    assert "Zapier production" in said
    page.get_by_text(re.compile("^Token “Zapier production” .* revoked")).wait_for()
    row = page.locator("table.tokens-table tbody tr", has_text="Zapier production")
    assert row.locator(".badge").inner_text().strip() == "Revoked"
    assert row.get_by_role("button", name=re.compile("^Revoke")).count() == 0

    with httpx.Client(base_url=ui_server.url, timeout=10) as api:
        refused = api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    page.context.close()

"""A person in two tenants, in Chromium against a real `kbai serve`: the tenant picker after login, the
switch in the menu (a form POST carrying the session's csrf_token), tokens that stay in their tenant."""

from __future__ import annotations

import re

from kbai.services import Services
from tests.conftest import OPERATOR, LiveServer
from tests.gateway.helpers import DEV_EMAIL, DEV_PASSWORD, bearer
from tests.ui.conftest import new_page, seed_acme, shot


def test_a_person_in_two_tenants_picks_one_after_login_and_switches_in_the_menu(
    browser: object, ui_services: Services, ui_server: LiveServer
) -> None:
    acme = seed_acme(ui_services, ("developer.manage_tokens", "users.read", "roles.read"))
    globex, _, _ = ui_services.access.create_tenant(OPERATOR, "Globex", "boss@globex.test", "boss-password-1")
    role = ui_services.access.create_role(OPERATOR, globex.id, "Builders", ["developer.manage_tokens", "users.read"])
    ui_services.access.create_user(OPERATOR, globex.id, DEV_EMAIL, roles=[role.id])  # the same person
    page = new_page(browser, ui_server)
    page.goto("/login?next=/system-settings/api-keys")
    page.get_by_label("Email").fill(DEV_EMAIL)
    page.get_by_label("Password").fill(DEV_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/system-settings/tenant\?next=/system-settings/api-keys$"))
    assert page.get_by_role("heading", name="Choose a tenant").is_visible()
    choices = page.locator("form.tenant-choice button")
    assert sorted(t.split("\n")[0] for t in choices.all_inner_texts()) == ["Acme", "Globex"]
    shot(page, "tenant-picker")
    page.get_by_role("button", name="Globex").click()
    page.wait_for_url(re.compile(r".*/system-settings/api-keys$"))
    assert page.locator(".sidebar .tenant").inner_text() == "Globex"
    # A token made here belongs to Globex only.
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    made = page.request.post(
        "/api/v1/tokens", data={"name": "globex-bot", "scopes": ["users.read"]}, headers={"X-CSRF-Token": csrf or ""}
    )
    assert made.status == 201
    token = made.json()["token"]
    # The menu's switch: a form POST with the session's csrf_token; the new page is Acme's.
    switch = page.locator("form.tenant-switch")
    assert switch.locator('input[type="hidden"][name="csrf_token"]').get_attribute("value") == csrf
    switch.get_by_label("Switch tenant").select_option(label="Acme")
    switch.get_by_role("button", name="Switch").click()
    page.wait_for_url(re.compile(r".*/system-settings$"))
    assert page.locator(".sidebar .tenant").inner_text() == "Acme"
    new_csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert new_csrf and new_csrf != csrf  # a new session, a new CSRF token
    page.goto("/system-settings/api-keys")
    assert "globex-bot" not in page.content()  # Globex's token is not on Acme's API Keys
    with ui_server.client() as c:
        r = c.get("/auth/check", headers=bearer(token))
        assert r.status_code == 200 and r.headers["x-kbai-tenant"] == str(globex.id)
        assert r.headers["x-kbai-user"] == str(acme.dev_id)  # the person (their first membership's id here)
    page.context.close()

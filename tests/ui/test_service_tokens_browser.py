"""Service tokens in Debian's Chromium against a real `kbai serve` (SQLite): an admin makes one on API Keys,
sees it once, it works at /auth/check as a service token, and revokes it; a member sees no such table; an
admin deactivates a developer, keeping one of two tokens for the tenant. Saves the screenshots of
docs/lifecycle.md."""

from __future__ import annotations

import re

import httpx
import pytest

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
    user_actor,
)

pytestmark = pytest.mark.browser
TOKEN_DEV = ("developer.manage_tokens", "users.read", "roles.read")
KEYS = "/system-settings/api-keys"
MASK = "kbai_pk_" + "0" * 64


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _check(server: LiveServer, token: str) -> httpx.Response:
    return httpx.get(server.url + "/auth/check", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _mask(page, selector: str) -> None:
    page.evaluate("([s, m]) => { document.querySelector(s).textContent = m; }", [selector, MASK])


def test_admin_creates_sees_once_uses_and_revokes_a_service_token(
    browser: object, ui_server: LiveServer, ui_services: Services
) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    page = new_page(browser, ui_server)
    login(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto(KEYS)
    section = page.get_by_role("region", name="Service tokens of Acme")
    assert "0 of 25 service tokens" in section.inner_text()
    section.get_by_role("link", name="New service token").click()
    page.wait_for_url(f"**{KEYS}/service-tokens/new")
    page.get_by_label("Name").fill("Billing sync")
    page.get_by_label("View users").check()
    page.get_by_role("radio", name=re.compile(r"^30 days")).check()
    shot(page, "service-token-new")
    page.get_by_role("button", name="Create service token").click()

    card = page.get_by_role("region", name="Service token “Billing sync” created")
    card.wait_for()
    assert "It will not be shown again" in card.inner_text() and "belongs to Acme" in card.inner_text()
    token = page.locator("#new-token").inner_text().strip()
    assert re.fullmatch(r"kbai_pk_[0-9a-f]{64}", token)
    row = page.locator("table.service-tokens-table tbody tr", has_text="Billing sync")
    cells = row.inner_text()
    assert f"by {ADMIN_EMAIL}" in cells and "View users" in cells and "Active" in cells and "Never" in cells
    assert "1 of 25 service tokens" in section.inner_text()
    _mask(page, "#new-token")
    shot(page, "api-keys-service-tokens")

    r = _check(ui_server, token)
    assert r.status_code == 200 and r.headers.get("X-Kbai-Service-Token") == "true"
    assert "X-Kbai-User" not in r.headers and "X-Kbai-User-Email" not in r.headers

    page.reload()  # shown once
    assert page.locator("#new-token").count() == 0 and token not in page.content()
    row.get_by_role("button", name=re.compile("^Revoke")).click()
    said = confirm_dialog(page)
    assert "Billing sync" in said and "stops working" in said
    page.get_by_text(re.compile("^Token “Billing sync” .* revoked")).wait_for()
    assert "Revoked" in row.inner_text() and row.get_by_role("button", name=re.compile("^Revoke")).count() == 0
    assert _check(ui_server, token).status_code == 401

    # At 1024 px the service table's Revoke stays a visible button inside its panel, as on the personal table.
    ui_services.tokens.create_service(user_actor_with_perms(ui_services, ADMIN_EMAIL), "Nightly backup", ["users.read"])
    page.set_viewport_size({"width": 1024, "height": 820})
    page.goto(KEYS)
    table = page.locator("table.service-tokens-table")
    assert table.evaluate("t => t.scrollWidth - t.parentElement.clientWidth") <= 0
    button = table.get_by_role("button", name=re.compile("^Revoke"))
    panel = page.locator("section#service-tokens").bounding_box()
    box = button.bounding_box()
    assert button.is_visible() and panel is not None and box is not None
    assert box["x"] + box["width"] <= panel["x"] + panel["width"]
    page.context.close()


def test_admin_rotates_pauses_resumes_and_opens_the_activity_of_a_service_token(
    browser: object, ui_server: LiveServer, ui_services: Services
) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    admin = user_actor_with_perms(ui_services, ADMIN_EMAIL)
    old, old_token = ui_services.tokens.create_service(admin, "Billing sync", ["users.read"], expires_in_days=90)
    assert _check(ui_server, old_token).status_code == 200
    page = new_page(browser, ui_server)
    login(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto(KEYS)
    page.locator(f"#service-token-{old.id}").get_by_role("button", name=re.compile("^Rotate")).click()
    dialog = page.get_by_role("dialog", name=re.compile("Rotate “Billing sync”"))
    dialog.get_by_label("1 hour").check()
    dialog.get_by_role("button", name="Rotate token").click()

    card = page.get_by_role("region", name="Service token “Billing sync” rotated")
    card.wait_for()
    assert "keeps working until" in card.inner_text() and "belongs to Acme" in card.inner_text()
    token = page.locator("#new-token").inner_text().strip()
    assert re.fullmatch(r"kbai_pk_[0-9a-f]{64}", token) and token != old_token
    r = _check(ui_server, token)
    assert r.status_code == 200 and r.headers.get("X-Kbai-Service-Token") == "true"
    assert _check(ui_server, old_token).status_code == 200  # in its hour of grace
    old_row = page.locator(f"#service-token-{old.id}")
    assert "Stops" in old_row.inner_text() and "Replaced by" in old_row.inner_text()
    page.reload()
    assert page.locator("#new-token").count() == 0 and token not in page.content()

    row = page.locator("table.service-tokens-table tbody tr", has_text="Rotated from")
    row.get_by_role("button", name=re.compile("^Pause")).click()
    page.get_by_text(re.compile("^Service token paused")).wait_for()
    row = page.locator("table.service-tokens-table tbody tr", has_text="Rotated from")
    assert row.locator(".badge").inner_text() == "Paused"
    assert _check(ui_server, token).status_code == 401
    # At 1024 px every button of the row stays on screen inside the panel (Rotate is gone while paused).
    page.set_viewport_size({"width": 1024, "height": 820})
    panel = page.locator("section#service-tokens").bounding_box()
    for name in ("^Resume", "^Revoke"):
        box = row.get_by_role("button", name=re.compile(name)).bounding_box()
        assert panel is not None and box is not None and box["x"] + box["width"] <= panel["x"] + panel["width"]
    row.get_by_role("button", name=re.compile("^Resume")).click()
    page.get_by_text(re.compile("^Token resumed")).wait_for()
    assert _check(ui_server, token).status_code == 200

    row = page.locator("table.service-tokens-table tbody tr", has_text="Rotated from")
    row.get_by_role("link", name=re.compile("^Activity")).click()
    page.wait_for_url(re.compile(r".*/system-settings/api-keys/\d+/activity$"))
    header = page.locator("header.page-header").inner_text()
    assert "service token of Acme" in header and token[:12] in header and "Billing sync" in header
    assert page.get_by_role("heading", name="Requests per hour, last 30 days").is_visible()
    page.set_viewport_size({"width": 1280, "height": 820})
    page.goto(KEYS)
    shot(page, "api-keys-service-token-actions", page.locator("section#service-tokens"))
    page.context.close()


def test_admin_sets_the_ceiling_and_a_service_token_acts_within_it(
    browser: object, ui_server: LiveServer, ui_services: Services
) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    admin = user_actor_with_perms(ui_services, ADMIN_EMAIL)
    _view, token = ui_services.tokens.create_service(admin, "Status page", ["users.read", "roles.read"])

    def allowed(scope: str) -> int:
        r = httpx.get(
            f"{ui_server.url}/auth/check?scope={scope}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        return r.status_code

    assert allowed("roles.read") == 200 and allowed("users.read") == 200
    page = new_page(browser, ui_server)
    login(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto(KEYS)
    page.get_by_role("region", name="Service tokens of Acme").get_by_role("link", name=re.compile("^Ceiling")).click()
    page.wait_for_url(f"**{KEYS}/service-tokens/ceiling")
    assert "Default: each service token acts with the scopes it was made with" in page.content()
    page.get_by_label("View users").check()
    page.get_by_role("button", name="Save ceiling").click()
    page.get_by_text(re.compile("^Ceiling saved")).wait_for()
    current = page.get_by_role("region", name="What service tokens may do now").inner_text()
    assert "users.read" in current and "roles.read" not in current
    assert allowed("users.read") == 200 and allowed("roles.read") == 403  # within the ceiling from the next request
    shot(page, "service-token-ceiling")
    page.get_by_role("button", name="Use the default").click()
    page.get_by_text(re.compile("^Ceiling saved")).wait_for()
    assert "Default: each service token acts" in page.content() and allowed("roles.read") == 200
    page.context.close()


def user_actor_with_perms(svc: Services, email: str):
    import dataclasses

    user = svc.access.user_by_email(email)
    assert user is not None
    with svc.db.read() as s:
        return dataclasses.replace(user_actor(svc, email), permissions=svc.access.permissions(s, user))


def test_a_member_without_the_permission_sees_no_service_tokens(
    browser: object, ui_server: LiveServer, ui_services: Services
) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    ui_services.tokens.create_service(user_actor_with_perms(ui_services, ADMIN_EMAIL), "Status page", ["users.read"])
    page = new_page(browser, ui_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    page.get_by_role("heading", name="Your tokens").wait_for()
    assert page.get_by_role("region", name=re.compile("^Service tokens")).count() == 0
    assert "Status page" not in page.content() and page.get_by_text("New service token").count() == 0
    page.goto(f"{KEYS}/service-tokens/new")
    assert "developer.manage_service_tokens" in page.get_by_role("alert").inner_text()
    page.context.close()


def test_deactivating_a_developer_keeps_one_token_and_stops_the_other(
    browser: object, ui_server: LiveServer, ui_services: Services
) -> None:
    acme = seed_acme(ui_services, TOKEN_DEV)
    dev = user_actor_with_perms(ui_services, DEV_EMAIL)
    kept, kept_token = ui_services.tokens.create(dev, "Nightly sync", ["users.read"], expires_in_days=90)
    gone, gone_token = ui_services.tokens.create(dev, "Local script", ["roles.read"])
    for token in (kept_token, gone_token):
        assert _check(ui_server, token).status_code == 200

    page = new_page(browser, ui_server)
    login(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto("/system-settings/users")
    page.locator(f"#user-{acme.dev_id}").get_by_role("link", name=re.compile("^Deactivate")).click()
    page.wait_for_url(f"**/system-settings/users/{acme.dev_id}/deactivate")
    page.get_by_role("heading", name=f"Deactivate {DEV_EMAIL}?").wait_for()
    table = page.locator("table.handover-table")
    for view in (kept, gone):
        row = table.locator(f"#handover-{view.id}")
        assert view.name in row.inner_text() and view.prefix in row.inner_text()
        choice = row.get_by_label(re.compile(f"^What happens to {view.name}"))
        assert choice.input_value() == ""  # "Let it stop" is the default
    table.get_by_label(re.compile("^What happens to Nightly sync")).select_option(label="Keep as a service token")
    shot(page, "users-deactivate-hand-over")
    page.get_by_role("button", name=f"Deactivate {DEV_EMAIL}").click()
    page.wait_for_url(re.compile(r".*/system-settings/users\?done=deactivated_kept$"))
    page.get_by_text("User deactivated. Their sessions ended; the tokens you kept work on").wait_for()
    assert "Deactivated" in page.locator(f"#user-{acme.dev_id}").inner_text()

    assert _check(ui_server, gone_token).status_code == 401
    r = _check(ui_server, kept_token)  # the same plaintext, now the tenant's
    assert r.status_code == 200 and r.headers.get("X-Kbai-Service-Token") == "true"
    page.goto(KEYS)
    row = page.locator("table.service-tokens-table tbody tr", has_text="Nightly sync")
    assert DEV_EMAIL in row.inner_text() and kept.prefix in row.inner_text()
    page.context.close()

"""The pages in a real browser (SQLite only; the full journey runs on both backends in test_journey):
Ask an admin, the limit, the token table, escaping, keyboard use and phone width. Saves the
screenshots shown in docs/ui.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.services import Services
from kbai.store.models import AdminRequest, AuditEvent, Token
from tests.conftest import FAST_ARGON2, LiveServer
from tests.ui.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DEV_EMAIL,
    DEV_PASSWORD,
    PHONE,
    confirm_dialog,
    login,
    new_page,
    seed_acme,
    shot,
    user_actor,
)

pytestmark = pytest.mark.browser
TOKEN_DEV = ("developer.manage_tokens", "users.read", "roles.read")


@pytest.fixture
def backend() -> str:
    return "sqlite"


def test_ask_an_admin_and_grant(browser: object, ui_server: LiveServer, ui_services: Services) -> None:
    acme = seed_acme(ui_services)

    page = new_page(browser, ui_server)
    page.goto("/system-settings/api-keys")
    page.wait_for_url(re.compile(r".*/login\?next=/system-settings/api-keys$"))
    shot(page, "login")
    # Keyboard only: type, Tab, type, Enter.
    page.get_by_label("Email").focus()
    page.keyboard.type(DEV_EMAIL)
    page.keyboard.press("Tab")
    page.keyboard.type(DEV_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/system-settings/api-keys")

    locked = page.get_by_role("region", name="Unlock developer mode")
    text = locked.inner_text()
    assert "You need the developer.manage_tokens permission to see and manage tokens." in text
    assert "It's a new permission that a tenant admin has to grant you" in text
    assert (
        "They go to System Settings → Roles, open your role, check Manage API Tokens under Developer, and save."
    ) in text
    assert page.get_by_role("button", name="Create token").count() == 0
    shot(page, "api-keys-no-permission")
    page.get_by_label("Note for your admin").fill("For our Zapier integration <b>please</b>")
    page.get_by_role("button", name="Ask an admin").click()
    page.get_by_text("Request sent.").wait_for()
    assert page.get_by_role("button", name="Ask an admin").count() == 0
    assert "You asked on" in locked.inner_text()

    with ui_services.db.read() as s:
        requests = s.scalars(select(AdminRequest)).all()
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "admin_request.create")).all()
    assert [(r.user_id, r.permission, r.resolved_at) for r in requests] == [
        (acme.dev_id, "developer.manage_tokens", None)
    ]
    assert len(events) == 1 and events[0].actor == f"user:{DEV_EMAIL}"

    admin = new_page(browser, ui_server)
    login(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.get_by_text("1 request from your team is waiting").wait_for()
    shot(admin, "system-settings")
    for where in ("Users", "Roles"):
        admin.get_by_role("navigation", name="System Settings").get_by_role("link", name=re.compile(where)).click()
        panel = admin.get_by_role("region", name=re.compile("Requests from your team"))
        request_text = panel.inner_text()
        assert DEV_EMAIL in request_text and "Manage API Tokens" in request_text
        assert "For our Zapier integration <b>please</b>" in request_text  # shown as text
        shot(admin, where.lower())
    admin.get_by_label("Role to grant Manage API Tokens on").select_option(label="Developers")
    admin.get_by_role("button", name="Grant", exact=True).click()
    admin.get_by_text("Permission granted.").wait_for()
    assert admin.url.endswith(f"/system-settings/roles/{acme.role_id}?done=granted")
    assert admin.get_by_label("Manage API Tokens").is_checked()
    admin.goto("/system-settings/roles")
    assert admin.get_by_role("region", name=re.compile("Requests from your team")).count() == 0
    admin.context.close()

    page.goto("/system-settings/api-keys")
    page.get_by_role("heading", name="Create a token").wait_for()
    page.get_by_text("0 of 10 active tokens").wait_for()
    page.get_by_text("No tokens yet.").wait_for()
    shot(page, "api-keys-empty")
    page.context.close()


def _seed_tokens(svc: Services, database_url: str) -> None:
    """Ten active tokens, one revoked and one expired, some of them used."""
    dev = user_actor(svc, DEV_EMAIL)
    now = datetime.now(UTC).replace(microsecond=0)
    past = Services.build(
        Settings(database_url=database_url, **FAST_ARGON2), clock=FrozenClock(now - timedelta(days=120))
    )
    try:
        past.tokens.create(dev, "Trial script", ["users.read"], expires_in_days=30)
    finally:
        past.close()
    old, _ = svc.tokens.create(dev, "Old Zapier key", ["users.read", "roles.read"], expires_in_days=90)
    svc.tokens.revoke(dev, old.id)
    specs = [
        ("Zapier production", ["users.read", "roles.read"], 90),
        ("n8n nightly sync", ["users.read"], 30),
        ("Local dev", ["roles.read"], 7),
        ("GitHub Actions deploy", ["roles.read"], 60),
        ("Metabase sync", ["users.read"], None),
        ("Slack alerts bot", ["users.read"], 90),
        ("Billing export cron", ["users.read", "roles.read"], 90),
        ("Staging smoke tests", ["roles.read"], 30),
        ("Data warehouse ETL", ["users.read"], 60),
        ("Support dashboard", ["users.read", "roles.read"], 90),
    ]
    with_use = {"Zapier production": 2, "n8n nightly sync": 600, "Billing export cron": 60 * 24 * 3}
    for name, scopes, days in specs:
        view, _ = svc.tokens.create(dev, name, scopes, expires_in_days=days)
        if name in with_use:
            with svc.db.write() as s:
                row = s.get(Token, view.id)
                assert row is not None
                row.last_used_at = now - timedelta(minutes=with_use[name])


def test_limit_table_and_revoke(
    browser: object, ui_server: LiveServer, ui_services: Services, database_url: str
) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    _seed_tokens(ui_services, database_url)

    page = new_page(browser, ui_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto("/system-settings/api-keys")
    warning = page.get_by_role("status").filter(has_text="active tokens.")
    text = warning.inner_text()
    assert "10 of 10 active tokens" in text
    assert "Revoke one below before creating a new one. Need more? Email support@keebai.com." in text
    assert page.get_by_role("button", name="Create token").count() == 0
    shot(page, "api-keys-limit")

    table = page.get_by_role("region", name="Your tokens")
    rows = table.locator("tbody tr")
    assert rows.count() == 12
    statuses = {r.locator(".token-name").inner_text(): r.locator(".badge").inner_text() for r in rows.all()}
    assert statuses["Trial script"] == "Expired"
    assert statuses["Old Zapier key"] == "Revoked"
    assert list(statuses.values()).count("Active") == 10
    classes = {
        table.locator(f".badge-{s}").first.evaluate("e => getComputedStyle(e).backgroundColor")
        for s in ("active", "expired", "revoked")
    }
    assert len(classes) == 3, "the three statuses look different"
    metabase = rows.filter(has_text="Metabase sync")
    assert metabase.locator("td").nth(4).inner_text() == "Never"  # Expires: Never
    assert metabase.locator("td").nth(3).inner_text() == "Never"  # Last used: Never
    assert rows.filter(has_text="Zapier production").locator("td").nth(3).inner_text().endswith("UTC")
    shot(page, "api-keys-table", table)

    # Dismissing the confirmation keeps the token; accepting it revokes.
    local = rows.filter(has_text="Local dev")
    local.get_by_role("button", name=re.compile("^Revoke")).click()
    dialogs = [confirm_dialog(page, accept=False)]
    assert local.locator(".badge").inner_text() == "Active"
    local.get_by_role("button", name=re.compile("^Revoke")).click()
    dialogs.append(confirm_dialog(page))
    page.get_by_text(re.compile("^Token “Local dev” .* revoked")).wait_for()
    assert len(dialogs) == 2 and all("Local dev" in d for d in dialogs)
    assert rows.filter(has_text="Local dev").locator(".badge").inner_text() == "Revoked"
    page.get_by_text("9 of 10 active tokens").wait_for()
    page.get_by_role("button", name="Create token").wait_for()
    page.context.close()


def test_script_in_a_name_is_text(browser: object, ui_server: LiveServer, ui_services: Services) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    name = "<script>alert(1)</script>"
    page = new_page(browser, ui_server)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto("/system-settings/api-keys")
    page.get_by_label("Name").fill(name)
    page.get_by_label("View users").check()
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("heading", name=f"Token “{name}” created").wait_for()
    page.goto("/system-settings/api-keys")
    cell = page.locator(".token-name")
    assert cell.inner_text() == name
    assert page.locator("script:not([src])").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []
    page.context.close()


def test_phone_width(browser: object, ui_server: LiveServer, ui_services: Services, database_url: str) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    dev = user_actor(ui_services, DEV_EMAIL)
    ui_services.tokens.create(dev, "Zapier production", ["users.read", "roles.read"], expires_in_days=90)
    ui_services.tokens.create(dev, "Local dev", ["roles.read"], expires_in_days=None)
    page = new_page(browser, ui_server, PHONE)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    for path in ("/system-settings", "/system-settings/roles", "/system-settings/users", "/system-settings/api-keys"):
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at phone width"
    page.get_by_role("button", name=re.compile("^Revoke")).first.wait_for()
    shot(page, "api-keys-phone")
    page.context.close()

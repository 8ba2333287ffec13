"""Issue 7's pages in Debian's Chromium against a real `kbai serve` (SQLite): the activity heatmap,
rotating with a grace period, the admin revoking someone's token from the inventory and the owner
reading the notification, and the tenant policy refusing a 365-day token. Saves the screenshots
shown in docs/ui.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from kbai import tokenformat as fmt
from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.lifecycle.activity import DAYS
from kbai.services import Services
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
MASK = "kbai_pk_" + "0" * 64
SECRET_MASK = "whsec_" + "A" * 43 + "="
# Records every CSP violation of the page (an init script runs before the page's own, outside its CSP).
CSP_WATCH = (
    "window.__csp = []; document.addEventListener('securitypolicyviolation', "
    "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _at(svc: Services, when: datetime) -> Services:
    """Services on the same database whose clock is stopped at ``when`` (to create tokens in the past)."""
    return Services.build(Settings(database_url=str(svc.settings.database_url), **FAST_ARGON2), clock=FrozenClock(when))


def _past_token(
    svc: Services, email: str, name: str, scopes: list[str], days_ago: int, expires_in_days: int | None = None
) -> tuple[int, str]:
    now = datetime.now(UTC).replace(microsecond=0)
    past = _at(svc, now - timedelta(days=days_ago))
    try:
        view, plaintext = past.tokens.create(user_actor(svc, email), name, scopes, expires_in_days=expires_in_days)
    finally:
        past.close()
    return view.id, plaintext


def _masked(page, selector: str, mask: str) -> None:
    page.evaluate("([s, m]) => { document.querySelector(s).textContent = m; }", [selector, mask])


def _no_overflow(page, path: str) -> None:
    page.goto(path)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at phone width"


# ---- activity -----------------------------------------------------------------------------------
def test_activity_heatmap_in_chromium(browser: object, ui_server: LiveServer, ui_services: Services) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    token_id, _ = _past_token(ui_services, DEV_EMAIL, "Billing export cron", ["users.read"], days_ago=20)
    now = datetime.now(UTC).replace(microsecond=0)
    start = (now - timedelta(days=19)).replace(hour=0, minute=0, second=0)
    # Office hours on weekdays (busiest late morning) and a nightly 02:00 run, every day up to yesterday...
    office = {8: 2, 9: 4, 10: 7, 11: 8, 12: 3, 13: 4, 14: 7, 15: 6, 16: 4, 17: 2}  # requests per hour
    uses: list[datetime] = []
    day = start
    while day.date() < now.date():
        uses += [day.replace(hour=2, minute=m) for m in range(4)]
        if day.weekday() < 5:
            uses += [day.replace(hour=hour, minute=m) for hour, n in office.items() for m in range(n)]
        day += timedelta(days=1)
    for at in uses:
        ui_services.usage.record(token_id, at, "203.0.113.7", "BillingExport/2.3 python-httpx/0.27")
    # ...and, yesterday at 23:00 (an hour of the week never used in its first 14 days), from somewhere else.
    odd = (now - timedelta(days=1)).replace(hour=23, minute=17, second=0)
    ui_services.usage.record(token_id, odd, "198.51.100.23", "curl/8.5.0")
    ui_services.usage.flush()
    expected = [[0] * 24 for _ in range(7)]
    for at in [*uses, odd]:
        expected[at.weekday()][at.hour] += 1

    page = new_page(browser, ui_server)
    page.add_init_script(CSP_WATCH)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto("/system-settings/api-keys")
    page.get_by_role("link", name=re.compile(r"^Activity of Billing export cron")).click()
    page.wait_for_url(f"**/system-settings/api-keys/{token_id}/activity")
    heatmap = page.locator("svg.kbai-heatmap")
    heatmap.wait_for()
    cells = heatmap.locator("rect").evaluate_all(
        "rs => rs.map(r => [+r.dataset.weekday, +r.dataset.hour, +r.dataset.count])"
    )
    assert len(cells) == 7 * 24
    drawn = [[0] * 24 for _ in range(7)]
    for d, h, n in cells:
        drawn[d][h] = n
    assert drawn == expected
    assert page.locator("[data-stat=total]").inner_text() == f"{len(uses) + 1:,}"
    box = heatmap.bounding_box()
    assert box is not None and box["width"] > 600, "the heatmap is drawn at a readable size"
    shades = {
        heatmap.locator(f'rect[data-weekday="{d}"][data-hour="{h}"]').get_attribute("fill")
        for d, h in ((0, 3), (start.weekday(), 2), (0, 10), (0, 11))
    }
    assert len(shades) >= 3, "more requests are darker"
    assert heatmap.locator("[style], script").count() == 0
    assert page.evaluate("window.__csp") == [], "nothing on the page breaks the CSP"

    warning = page.get_by_role("status").filter(has_text="Used outside its usual hours.")
    assert f"{DAYS[odd.weekday()]} 23:00–00:00 UTC" in warning.inner_text()
    last_use = page.get_by_role("region", name="Last use")
    assert "198.51.100.23" in last_use.inner_text() and "curl/8.5.0" in last_use.inner_text()
    assert "Flagged" in page.get_by_role("region", name="Outside usual hours").inner_text()
    shot(page, "token-activity")
    page.context.close()


# ---- rotation -----------------------------------------------------------------------------------
def test_rotate_with_a_24_hour_grace_period(browser: object, ui_server: LiveServer, ui_services: Services) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    dev = user_actor(ui_services, DEV_EMAIL)
    _past_token(ui_services, DEV_EMAIL, "Trial script", ["users.read"], days_ago=120, expires_in_days=365)
    used_id, _ = _past_token(ui_services, DEV_EMAIL, "n8n nightly sync", ["users.read"], days_ago=40)
    ui_services.usage.record(used_id, datetime.now(UTC) - timedelta(hours=3))
    ui_services.usage.flush()
    old, old_token = ui_services.tokens.create(
        dev, "Zapier production", ["users.read", "roles.read"], expires_in_days=90
    )

    page = new_page(browser, ui_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto("/system-settings/api-keys")
    table = page.get_by_role("region", name="Your tokens")
    trial = table.locator("tbody tr", has_text="Trial script")
    assert trial.locator(".flag").all_inner_texts() == ["Unused for 90+ days", "Older than 90 days — rotate"]
    assert table.locator("tbody tr", has_text="n8n nightly sync").locator(".flag").count() == 0

    row = table.locator(f"#token-{old.id}")
    row.get_by_role("button", name=re.compile("^Rotate")).click()
    form = page.get_by_role("dialog", name=re.compile("Rotate “Zapier production”"))
    assert form.get_by_label("24 hours").is_checked(), "24 hours is preselected"
    assert form.get_by_label("New token's lifetime").input_value() == "same"
    with page.expect_response(lambda r: r.url.endswith(f"/api-keys/{old.id}/rotate")) as answer:
        form.get_by_role("button", name="Rotate token").click()
    assert answer.value.status == 303, "post/redirect/get"

    card = page.get_by_role("region", name="Token “Zapier production” rotated")
    card.wait_for()
    assert "It will not be shown again" in card.inner_text()
    assert "keeps working until" in card.inner_text()
    new_token = page.locator("#new-token").inner_text().strip()
    well_formed, replaced = fmt.is_well_formed(new_token), new_token != old_token
    assert well_formed and replaced
    card.get_by_role("button", name="Copy").click()
    card.get_by_role("button", name="Copied").wait_for()
    with httpx.Client(base_url=ui_server.url, timeout=10) as api:
        for token in (old_token, new_token):  # the old one keeps working through the grace period
            assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    _masked(page, "#new-token", MASK)
    shot(page, "api-keys-rotated")

    page.goto("/system-settings/api-keys")
    new_row = table.locator("tbody tr", has_text="Rotated from")
    new_prefix = new_row.locator("td").nth(1).inner_text().strip()
    assert new_prefix == new_token[:12]
    old_row = table.locator(f"#token-{old.id}")
    assert old_row.locator(".rotation-link").inner_text() == f"Replaced by Zapier production {new_prefix}"
    assert new_row.locator(".rotation-link").inner_text() == f"Rotated from Zapier production {old.prefix}"
    assert old_row.locator(".badge").inner_text() == "Active" and "Stops" in old_row.inner_text()
    assert old_row.get_by_role("button", name=re.compile("^Rotate")).count() == 0, "its successor is the one to rotate"
    old_row.locator(".rotation-link a").click()
    page.wait_for_function("location.hash.startsWith('#token-')")
    assert page.evaluate("location.hash") == new_row.evaluate("r => '#' + r.id")
    shot(page, "api-keys-lifecycle-table", table)
    page.context.close()


# ---- the admin inventory and the owner's notification -------------------------------------------
def test_admin_revokes_from_the_inventory_and_the_owner_is_told(
    browser: object, ui_server: LiveServer, ui_services: Services
) -> None:
    seed_acme(ui_services, TOKEN_DEV)
    dev = user_actor(ui_services, DEV_EMAIL)
    admin = user_actor(ui_services, ADMIN_EMAIL)
    _past_token(ui_services, DEV_EMAIL, "Old cron", ["users.read"], days_ago=130)
    ui_services.tokens.create(dev, "Short job", ["roles.read"], expires_in_days=7)
    zapier, zapier_token = ui_services.tokens.create(
        dev, "Zapier production", ["users.read", "roles.read"], expires_in_days=90
    )
    ui_services.tokens.create(admin, "Admin reporting", ["audit.read"], expires_in_days=30)

    page = new_page(browser, ui_server)
    login(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.get_by_role("navigation", name="System Settings").get_by_role("link", name="All tokens").click()
    page.wait_for_url("**/system-settings/tokens")
    rows = page.locator("table.inventory-table tbody tr")
    assert rows.count() == 4
    page.get_by_label("Owner").fill(DEV_EMAIL)
    page.get_by_label("Status").select_option("active")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*owner=dev%40acme\.test&status=active$"))
    assert rows.count() == 3
    assert page.get_by_role("link", name="Export CSV").get_attribute("href") == (
        "/api/v1/admin/tokens/export?owner=dev%40acme.test&status=active"
    )
    shot(page, "all-tokens")

    row = rows.filter(has_text="Zapier production")
    row.get_by_role("button", name=re.compile("^Revoke")).click()
    said = confirm_dialog(page)
    page.get_by_text(re.compile(f"^Token “Zapier production” .* of {re.escape(DEV_EMAIL)} revoked")).wait_for()
    assert "Zapier production" in said and DEV_EMAIL in said
    assert "owner=dev%40acme.test" in page.url and "status=active" in page.url
    assert rows.count() == 2 and rows.filter(has_text="Zapier production").count() == 0
    with httpx.Client(base_url=ui_server.url, timeout=10) as api:
        assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {zapier_token}"}).status_code == 401
    page.context.close()

    page = new_page(browser, ui_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    nav = page.get_by_role("navigation", name="System Settings")
    assert nav.get_by_role("link", name="All tokens").count() == 0
    link = nav.get_by_role("link", name=re.compile("^Notifications"))
    assert link.locator(".count").inner_text().startswith("1")
    link.click()
    item = page.locator(".notification").first
    assert f"Your token {zapier.prefix} (Zapier production) was revoked by {ADMIN_EMAIL}" in item.inner_text()
    assert "Revoked by an admin" in item.inner_text() and "Unread" in item.inner_text()
    shot(page, "notifications")
    item.get_by_role("button", name=re.compile("^Mark as read")).click()
    page.get_by_text("Marked as read.").wait_for()
    assert nav.get_by_role("link", name=re.compile("^Notifications")).locator(".count").count() == 0
    assert page.locator(".notification.is-unread").count() == 0
    page.context.close()

    # The new pages fit a phone.
    phone = new_page(browser, ui_server, PHONE)
    login(phone, ADMIN_EMAIL, ADMIN_PASSWORD)
    for path in (
        "/system-settings/tokens",
        "/system-settings/token-policy",
        "/system-settings/notifications",
        f"/system-settings/api-keys/{zapier.id}/activity",
    ):
        _no_overflow(phone, path)
    phone.context.close()


# ---- the tenant policy --------------------------------------------------------------------------
def test_policy_refuses_a_365_day_token(browser: object, ui_server: LiveServer, ui_services: Services) -> None:
    seed_acme(ui_services, TOKEN_DEV)

    admin = new_page(browser, ui_server)
    login(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.get_by_role("navigation", name="System Settings").get_by_role("link", name="Token policy").click()
    admin.get_by_label("Maximum lifetime").fill("90")
    admin.get_by_label("Expiration required").check()
    admin.get_by_label("Auto-revoke tokens unused for").fill("180")
    admin.get_by_label("Webhook URL").fill("https://hooks.example.com/kbai")
    admin.get_by_role("button", name="Save policy").click()
    card = admin.get_by_role("region", name="Webhook signing secret")
    card.wait_for()
    assert "It will not be shown again" in card.inner_text()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", admin.locator("#webhook-secret").inner_text().strip())
    _masked(admin, "#webhook-secret", SECRET_MASK)
    shot(admin, "token-policy")
    admin.context.close()

    page = new_page(browser, ui_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto("/system-settings/api-keys")
    expiration = page.get_by_role("group", name="Expiration")
    assert "Your organisation's policy: every token must expire, at most 90 days from today." in expiration.inner_text()
    assert expiration.get_by_role("radio", name=re.compile("^No expiration")).count() == 0
    assert expiration.get_by_role("radio", name=re.compile(r"^90 days")).is_checked()
    page.get_by_label("Name").fill("Yearly report")
    page.get_by_label("View users").check()
    in_a_year = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
    date_field = page.get_by_label("Custom expiration date (UTC)")
    assert not date_field.is_visible(), "the date field shows only for Custom date"
    page.get_by_role("radio", name=re.compile("^Custom date")).check()
    date_field.fill(in_a_year)
    assert page.get_by_role("radio", name=re.compile("^Custom date")).is_checked()
    message = "Your organisation allows tokens of at most 90 days."
    # The browser refuses the date with the policy's words...
    page.get_by_role("button", name="Create token").click()
    assert date_field.evaluate("e => e.validationMessage") == message
    assert page.url.endswith("/system-settings/api-keys") and page.locator("#new-token").count() == 0
    # ...and so does the server, for a page opened before the policy changed.
    date_field.evaluate("e => { e.removeAttribute('max'); e.setCustomValidity(''); }")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Create token").click()
    assert answer.value.status == 422
    alert = page.get_by_role("alert")
    assert alert.inner_text() == message
    assert page.get_by_label("Name").input_value() == "Yearly report"
    assert page.locator("#new-token").count() == 0
    shot(page, "api-keys-policy")
    page.context.close()
    assert ui_services.tokens.list(user_actor(ui_services, DEV_EMAIL).user_id or 0) == []

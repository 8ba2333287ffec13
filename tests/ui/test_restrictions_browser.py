"""Restrictions in a real browser (SQLite): the create form's description and IP allowlist, the row's
Details, Pause and Resume with the Paused badge, and Revoke still visible at 1024 px. Saves
docs/screenshots/api-keys-restrictions.png."""

from __future__ import annotations

import re
import time

import pytest

from kbai.services import Services
from tests.conftest import LiveServer
from tests.ui.conftest import DEV_EMAIL, DEV_PASSWORD, login, new_page, seed_acme, shot

pytestmark = pytest.mark.browser


@pytest.fixture
def backend() -> str:
    return "sqlite"


def test_create_with_restrictions_pause_and_resume(
    browser: object, ui_server: LiveServer, ui_services: Services
) -> None:
    seed_acme(ui_services, ("developer.manage_tokens", "users.read", "roles.read"))
    page = new_page(browser, ui_server, {"width": 1024, "height": 900})
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto("/system-settings/api-keys")
    page.get_by_label("Name").fill("Office sync")
    page.get_by_label("View users").check()
    page.locator("summary", has_text="Description and restrictions").click()
    page.get_by_label("Description").fill("Nightly CRM export; owner: data team")
    page.get_by_label("Allowed IP addresses").fill("203.0.113.0/24\n2001:db8::/32")
    page.locator("#expiry-never").check()
    page.get_by_role("button", name="Create token").click()
    page.wait_for_url("**/system-settings/api-keys")
    row = page.locator("tbody tr", has_text="Office sync")
    row.locator("summary", has_text="Details").click()
    details = row.locator(".token-details").inner_text()
    assert "Nightly CRM export; owner: data team" in details
    assert "203.0.113.0/24" in details and "2001:db8::/32" in details
    assert row.locator(".badge").inner_text() == "Active"

    row.get_by_role("button", name=re.compile("^Pause")).click()
    page.get_by_text(re.compile("^Token paused")).wait_for()
    row = page.locator("tbody tr", has_text="Office sync")
    assert row.locator(".badge").inner_text() == "Paused"
    revoke = row.get_by_role("button", name=re.compile("^Revoke"))
    assert revoke.is_visible() and row.get_by_role("button", name=re.compile("^Resume")).is_visible()
    box = revoke.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1024, "Revoke stays on screen at 1024 px"
    row.locator("summary", has_text="Details").click()
    shot(page, "api-keys-restrictions", page.get_by_role("region", name="Your tokens"))

    row.get_by_role("button", name=re.compile("^Resume")).click()
    page.get_by_text(re.compile("^Token resumed")).wait_for()
    assert page.locator("tbody tr", has_text="Office sync").locator(".badge").inner_text() == "Active"
    page.context.close()


def test_a_bad_range_is_shown_under_its_field(browser: object, ui_server: LiveServer, ui_services: Services) -> None:
    seed_acme(ui_services, ("developer.manage_tokens", "users.read"))
    page = new_page(browser, ui_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto("/system-settings/api-keys")
    page.get_by_label("Name").fill("Bad range")
    page.locator("summary", has_text="Description and restrictions").click()
    page.get_by_label("Allowed IP addresses").fill("10.0.0.0/33")
    page.locator("#expiry-never").check()
    page.get_by_label("Identity only: no scopes").check()
    page.get_by_role("button", name="Create token").click()
    error = page.locator("#token-allowed-ips-error")
    error.wait_for()
    assert "10.0.0.0/33" in error.inner_text() and "203.0.113.0/24" in error.inner_text()
    assert page.get_by_label("Allowed IP addresses").input_value() == "10.0.0.0/33"
    page.context.close()


def test_a_rate_limit_and_a_quota_from_the_form_count_and_show(
    browser: object, ui_server: LiveServer, ui_services: Services
) -> None:
    import httpx

    seed_acme(ui_services, ("developer.manage_tokens", "users.read"))
    page = new_page(browser, ui_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto("/system-settings/api-keys")
    page.get_by_label("Name").fill("Metered sync")
    page.get_by_label("View users").check()
    page.locator("summary", has_text="Description and restrictions").click()
    page.get_by_label("Rate limit").fill("50")
    page.locator("#token-rate-per").select_option("minute")
    page.get_by_label("Quota").fill("1,000")
    page.locator("#token-quota-refill").select_option("month")
    page.locator("#expiry-never").check()
    page.get_by_role("button", name="Create token").click()
    page.wait_for_url("**/system-settings/api-keys")
    token = page.locator("#new-token").inner_text().strip()
    for _ in range(3):
        r = httpx.get(ui_server.url + "/auth/check", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200
    assert r.headers["x-kbai-quota-remaining"] == "997"
    time.sleep(1)  # Last used is written every half second here (KBAI_LAST_USED_FLUSH_SECONDS)
    page.reload()
    row = page.locator("tbody tr", has_text="Metered sync")
    row.locator("summary", has_text="Details").click()
    details = row.locator(".token-details").inner_text()
    assert "At most 50 per minute" in details
    assert "Quota: 997 requests left, back to 1,000 each month" in details
    shot(page, "api-keys-limits", page.get_by_role("region", name="Your tokens"))

    # A quota that is not a number is shown under its own field, and nothing is created.
    page.get_by_label("Name").fill("Bad quota")
    page.get_by_label("View users").check()
    page.locator("summary", has_text="Description and restrictions").click()
    page.get_by_label("Quota").fill("lots")
    page.locator("#expiry-never").check()
    page.get_by_role("button", name="Create token").click()
    assert "Write the quota as a whole number" in page.locator("#token-quota-error").inner_text()
    assert page.locator("tbody tr", has_text="Bad quota").count() == 0
    page.context.close()

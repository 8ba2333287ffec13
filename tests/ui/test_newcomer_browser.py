"""Issue 20: the API Keys journey as a new developer and a new admin meet it, in Debian's Chromium against a
real `kbai serve` (SQLite), at desktop width (1280 px) and phone width (390 px).

1. after the help page's own grant, the form offers only scopes a token can use (the product's permissions,
   never Manage API Tokens); with none, it says so and offers Ask an admin; no scope only as "Identity only";
2. rotating with the preselected 24 h overlap works at 10 of 10;
3. no table scrolls sideways at 1280 px with long scope names, and every Revoke stays on screen at >= 1024 px;
4. reloading after Create or Rotate shows no error and creates nothing;
5. the developer who asked is told when the permission is granted, with a link to API Keys;
6. form errors sit under their field, which is marked invalid and has the focus, in a person's words;
7. the expiration copy is the help page's, and follows a 60-day policy;
8. the table says how far Last used may lag;
9. the developer sees their own role on the Overview and on the locked page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kbai import tokenformat as fmt
from kbai.config import Settings
from kbai.services import Services
from kbai.store.models import AdminRequest, Token
from tests.conftest import FAST_ARGON2, LiveServer, start_server
from tests.ui.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DESKTOP,
    DEV_EMAIL,
    DEV_PASSWORD,
    OPERATOR,
    PHONE,
    confirm_dialog,
    login,
    new_page,
    shot,
    user_actor,
)

pytestmark = pytest.mark.browser
KEYS = "/system-settings/api-keys"
VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
MASK = "kbai_pk_" + "0" * 64
# A product's own permissions, some with long names (they are what wraps in the table).
PRODUCT_TOML = """
[groups.Contacts]
"contacts.read" = "Read contacts"
"contacts.write" = "Create contacts"
"contacts.export_including_archived_records" = "Export every contact, including archived records and their history"

[groups."Billing and invoices"]
"billing.invoices.read_all_historical_statements" = "Read all historical invoices and account statements"
"""
PRODUCT = (
    "contacts.read",
    "contacts.write",
    "contacts.export_including_archived_records",
    "billing.invoices.read_all_historical_statements",
)


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "permissions.toml"
    path.write_text(PRODUCT_TOML, encoding="utf-8")
    return path


@pytest.fixture
def product_services(database_url: str, catalog_file: Path) -> Iterator[Services]:
    svc = Services.build(Settings(database_url=database_url, permissions_file=catalog_file, **FAST_ARGON2))
    yield svc
    svc.close()


@pytest.fixture
def product_server(database_url: str, tmp_path: Path, catalog_file: Path) -> Iterator[LiveServer]:
    server = start_server(
        database_url, tmp_path, KBAI_PERMISSIONS_FILE=str(catalog_file), KBAI_LAST_USED_FLUSH_SECONDS="60"
    )
    yield server
    server.stop()


def seed(svc: Services, dev_permissions: tuple[str, ...]) -> int:
    """Acme: the admin, and dev@acme.test whose one role, Developers, holds ``dev_permissions``."""
    tenant, _admin, _ = svc.access.create_tenant(OPERATOR, "Acme", ADMIN_EMAIL, ADMIN_PASSWORD)
    role = svc.access.create_role(OPERATOR, tenant.id, "Developers", list(dev_permissions))
    svc.access.create_user(OPERATOR, tenant.id, DEV_EMAIL, DEV_PASSWORD, [role.id])
    return role.id


def grant_as_the_help_page_says(browser: object, server: LiveServer, role: str = "Developers") -> None:
    """The admin: System Settings → Roles, open the role, check Manage API Tokens under Developer, save."""
    admin = new_page(browser, server)
    login(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.get_by_role("navigation", name="System Settings").get_by_role("link", name=re.compile("^Roles")).click()
    admin.get_by_role("link", name=role, exact=True).click()
    admin.get_by_role("group", name="Developer").get_by_label("Manage API Tokens").check()
    admin.get_by_role("button", name="Save").click()
    admin.get_by_text("Saved.").wait_for()
    admin.context.close()


def offered_scopes(page) -> list[str]:
    return page.locator('input[name="scopes"]').evaluate_all("els => els.map(e => e.value)")


def token_count(svc: Services) -> int:
    with svc.db.read() as s:
        return int(s.scalar(select(func.count(Token.id))) or 0)


def no_sideways_scroll(page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


# ---- 1. usable scopes only ----------------------------------------------------------------------
@VIEWPORTS
def test_after_the_help_pages_grant_the_form_offers_only_scopes_a_token_can_use(
    browser: object, product_server: LiveServer, product_services: Services, viewport: dict[str, int]
) -> None:
    seed(product_services, ("contacts.read", "contacts.write"))
    grant_as_the_help_page_says(browser, product_server)

    page = new_page(browser, product_server, viewport)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    assert offered_scopes(page) == ["contacts.read", "contacts.write"], "never Manage API Tokens"
    scopes = page.get_by_role("group", name="Scopes")
    assert scopes.get_by_label("Manage API Tokens").count() == 0
    assert "a token can use" in scopes.inner_text()
    assert no_sideways_scroll(page) <= 0
    if viewport is DESKTOP:
        shot(page, "api-keys-create-form")

    page.get_by_label("Name").fill("Zapier production")
    page.get_by_label("Read contacts").check()
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("region", name="Token “Zapier production” created").wait_for()
    token = page.locator("#new-token").inner_text().strip()
    well_formed = fmt.is_well_formed(token)
    assert well_formed
    with httpx.Client(base_url=product_server.url, timeout=10) as api:
        checked = api.get(
            "/auth/check", params={"scope": "contacts.read"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert checked.status_code == 200, "the token can use its scope"
    page.context.close()


@VIEWPORTS
def test_with_no_usable_permission_the_form_says_so_and_offers_ask_an_admin(
    browser: object, product_server: LiveServer, product_services: Services, viewport: dict[str, int]
) -> None:
    """The issue's exact case: the role holds only Manage API Tokens, which a token can never use."""
    seed(product_services, ())
    grant_as_the_help_page_says(browser, product_server)

    page = new_page(browser, product_server, viewport)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    assert offered_scopes(page) == []
    message = page.locator("[data-no-usable]")
    assert (
        "Your role has no permissions a token can use. Ask an admin to add some to Developers." in message.inner_text()
    )
    if viewport is DESKTOP:
        shot(page, "api-keys-no-usable-scopes")

    # Create with nothing picked: refused, under Scopes, pointing at the deliberate choice.
    page.get_by_label("Name").fill("Just who I am")
    page.get_by_role("button", name="Create token").click()
    error = page.locator("#scopes-error")
    error.wait_for()
    assert "Pick at least one scope, or choose “Identity only”" in error.inner_text()
    assert token_count(product_services) == 0

    # Ask an admin for a permission a token can use.
    message = page.locator("[data-no-usable]")
    message.get_by_label("Permission to ask for").select_option("contacts.read")
    message.get_by_role("button", name="Ask an admin").click()
    page.get_by_text("Request sent.").wait_for()
    with product_services.db.read() as s:
        asked = [(r.permission, r.resolved_at) for r in s.scalars(select(AdminRequest))]
    assert asked == [("contacts.read", None)]
    assert "You asked for Read contacts" in page.get_by_role("group", name="Scopes").inner_text()

    # "Identity only", chosen on purpose, makes a token without scopes.
    page.get_by_label("Name").fill("Just who I am")
    page.get_by_label("Identity only").check()
    page.get_by_role("button", name="Create token").click()
    card = page.get_by_role("region", name="Token “Just who I am” created")
    card.wait_for()
    assert "Identity only: no scopes" in card.inner_text()
    page.context.close()


# ---- 2. rotation with a 24 h overlap at 10 of 10 -----------------------------------------------
@VIEWPORTS
def test_rotating_with_24_hours_of_overlap_at_10_of_10(
    browser: object, product_server: LiveServer, product_services: Services, viewport: dict[str, int]
) -> None:
    seed(product_services, ("developer.manage_tokens", "contacts.read"))
    dev = user_actor(product_services, DEV_EMAIL)
    made = [
        product_services.tokens.create(dev, f"Integration {i}", ["contacts.read"], expires_in_days=90) for i in range(9)
    ]
    old, old_token = product_services.tokens.create(dev, "Zapier production", ["contacts.read"], expires_in_days=90)
    assert len(made) == 9

    page = new_page(browser, product_server, viewport)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    page.get_by_text("10 of 10 active tokens").first.wait_for()
    page.locator(f"#token-{old.id}").get_by_role("button", name=re.compile("^Rotate")).click()
    dialog = page.get_by_role("dialog", name=re.compile("Rotate “Zapier production”"))
    assert dialog.get_by_label("24 hours").is_checked(), "24 hours is preselected, also at the limit"
    dialog.get_by_role("button", name="Rotate token").click()

    card = page.get_by_role("region", name="Token “Zapier production” rotated")
    card.wait_for()
    assert "keeps working until" in card.inner_text()
    new_token = page.locator("#new-token").inner_text().strip()
    page.get_by_text("10 of 10 active tokens").first.wait_for()
    old_row = page.locator(f"#token-{old.id}")
    assert old_row.locator(".badge").inner_text() == "Active" and "Stops" in old_row.inner_text()
    with httpx.Client(base_url=product_server.url, timeout=10) as api:
        for token in (old_token, new_token):  # both work during the overlap
            assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    page.context.close()


# ---- 3. tables at 1280 px with long scope names ----------------------------------------------------
def test_no_table_scrolls_sideways_and_revoke_stays_on_screen(
    browser: object, product_server: LiveServer, product_services: Services
) -> None:
    seed(product_services, ("developer.manage_tokens", *PRODUCT))
    dev = user_actor(product_services, DEV_EMAIL)
    admin = user_actor(product_services, ADMIN_EMAIL)
    product_services.tokens.create(
        dev, "Data warehouse nightly export of every archived contact", list(PRODUCT), expires_in_days=90
    )
    product_services.tokens.create(dev, "Zapier production", ["contacts.read", "contacts.write"], expires_in_days=30)
    product_services.tokens.create(admin, "Billing statements sync", list(PRODUCT[2:]) + ["users.read"])

    for width in (1280, 1024):
        for who, password, path in (
            (DEV_EMAIL, DEV_PASSWORD, KEYS),
            (ADMIN_EMAIL, ADMIN_PASSWORD, "/system-settings/tokens"),
        ):
            page = new_page(browser, product_server, {"width": width, "height": 820})
            login(page, who, password)
            page.goto(path)
            assert no_sideways_scroll(page) <= 0, f"{path} at {width}px"
            table = page.locator("table.tokens-table")
            panel = page.locator("section.panel", has=table)
            overflow = table.evaluate("t => t.scrollWidth - t.parentElement.clientWidth")
            assert overflow <= 0, f"the table on {path} is {overflow}px wider than its panel at {width}px"
            box = panel.bounding_box()
            assert box is not None
            revokes = page.get_by_role("button", name=re.compile("^Revoke"))
            assert revokes.count() >= 2
            for button in revokes.all():
                assert button.is_visible()
                b = button.bounding_box()
                assert b is not None and b["x"] >= box["x"] and b["x"] + b["width"] <= box["x"] + box["width"], (
                    f"a Revoke button on {path} is outside its panel at {width}px"
                )
                assert b["x"] + b["width"] <= width
            if width == 1280:
                shot(
                    page,
                    "api-keys-table-long-scopes" if path == KEYS else "all-tokens-long-scopes",
                    table if path == KEYS else None,
                )
            page.context.close()


# ---- 4. reload after Create or Rotate -------------------------------------------------------------
@VIEWPORTS
def test_reloading_after_create_or_rotate_resubmits_nothing(
    browser: object, product_server: LiveServer, product_services: Services, viewport: dict[str, int]
) -> None:
    seed(product_services, ("developer.manage_tokens", "contacts.read"))
    page = new_page(browser, product_server, viewport)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    page.get_by_label("Name").fill("n8n nightly sync")
    page.get_by_label("Read contacts").check()
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("region", name="Token “n8n nightly sync” created").wait_for()
    assert page.url.endswith(KEYS) and "kbai_pk_" not in page.url
    posts.clear()

    page.reload()
    page.get_by_role("heading", name="Your tokens").wait_for()
    assert posts == [], "the reload sent no form"
    assert page.get_by_role("alert").count() == 0, "no error after the reload"
    assert page.locator("#new-token").count() == 0, "the token is shown once, not again"
    assert token_count(product_services) == 1

    (view,) = product_services.tokens.list(user_actor(product_services, DEV_EMAIL).user_id or 0)
    page.locator(f"#token-{view.id}").get_by_role("button", name=re.compile("^Rotate")).click()
    page.get_by_role("dialog", name=re.compile("Rotate")).get_by_role("button", name="Rotate token").click()
    page.get_by_role("region", name="Token “n8n nightly sync” rotated").wait_for()
    posts.clear()
    page.reload()
    page.get_by_role("heading", name="Your tokens").wait_for()
    assert posts == [] and page.get_by_role("alert").count() == 0 and page.locator("#new-token").count() == 0
    assert token_count(product_services) == 2
    page.context.close()


# ---- 5. the grant notice --------------------------------------------------------------------------
def test_the_developer_who_asked_is_told_when_it_is_granted(
    browser: object, product_server: LiveServer, product_services: Services
) -> None:
    seed(product_services, ("contacts.read",))
    page = new_page(browser, product_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    page.get_by_role("button", name="Ask an admin").click()
    page.get_by_text("Request sent.").wait_for()
    locked = page.get_by_role("region", name="Unlock developer mode")
    assert "you get a notification" in locked.inner_text()

    # The admin does not answer the request: they check the box on the role, as the help page says.
    grant_as_the_help_page_says(browser, product_server)

    page.goto("/system-settings")
    nav = page.get_by_role("navigation", name="System Settings")
    link = nav.get_by_role("link", name=re.compile("^Notifications"))
    assert link.locator(".count").inner_text().startswith("1")
    link.click()
    notice = page.locator(".notification").first
    assert "You have Manage API Tokens now" in notice.inner_text()
    assert "Access granted" in notice.inner_text() and "Developers" in notice.inner_text()
    shot(page, "notifications-granted")
    notice.get_by_role("link", name="Open API Keys").click()
    page.wait_for_url(f"**{KEYS}")
    page.get_by_role("heading", name="Create a token").wait_for()
    with product_services.db.read() as s:
        assert [r.resolved_at is not None for r in s.scalars(select(AdminRequest))] == [True]
    page.context.close()


# ---- 6. errors under their fields -----------------------------------------------------------------
@VIEWPORTS
def test_form_errors_sit_under_their_field_with_the_focus(
    browser: object, product_server: LiveServer, product_services: Services, viewport: dict[str, int]
) -> None:
    seed(product_services, ("developer.manage_tokens", "contacts.read"))
    product_services.tokens.create(user_actor(product_services, DEV_EMAIL), "Zapier production", ["contacts.read"])
    page = new_page(browser, product_server, viewport)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    name = page.get_by_label("Name")

    # The browser's own check, in kbai's words.
    page.get_by_role("button", name="Create token").click()
    said = name.evaluate("e => e.validationMessage")
    assert said.startswith("Give the token a name"), said
    assert token_count(product_services) == 1

    # The server's: a name already in use, under the Name field, which has the focus.
    name.fill("zapier PRODUCTION")
    page.get_by_label("Read contacts").check()
    page.get_by_role("button", name="Create token").click()
    error = page.locator("#token-name-error")
    error.wait_for()
    assert error.inner_text() == (
        "You already have an active token called “zapier PRODUCTION”. Choose another name, or revoke that token first."
    )
    assert name.get_attribute("aria-invalid") == "true"
    assert "token-name-error" in (name.get_attribute("aria-describedby") or "")
    assert page.evaluate("document.activeElement.id") == "token-name"
    assert name.input_value() == "zapier PRODUCTION", "the form keeps what was typed"
    if viewport is DESKTOP:
        shot(page, "api-keys-field-error")
    page.context.close()

    admin = new_page(browser, product_server, viewport)
    login(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.goto("/system-settings/roles")
    admin.get_by_label("Name").fill("developers ")
    admin.get_by_label("Name").fill("Developers")
    admin.get_by_role("button", name="Create role").click()
    error = admin.locator("#role-name-error")
    error.wait_for()
    assert error.inner_text() == "There is already a role called “Developers”. Choose another name."
    assert admin.evaluate("document.activeElement.id") == "role-name"
    admin.goto("/system-settings/users")
    admin.get_by_label("Email").fill(DEV_EMAIL.upper())
    admin.get_by_role("button", name="Add user").click()
    error = admin.locator("#user-email-error")
    error.wait_for()
    assert error.inner_text() == f"{DEV_EMAIL} is already a member of this tenant."
    assert admin.evaluate("document.activeElement.id") == "user-email"
    admin.context.close()


# ---- 7, 8, 9: expiration copy, the Last used lag, your role ---------------------------------------
def test_expiration_copy_follows_the_help_page_and_the_policy(
    browser: object, product_server: LiveServer, product_services: Services
) -> None:
    seed(product_services, ("developer.manage_tokens", "contacts.read"))
    page = new_page(browser, product_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    expiration = page.get_by_role("group", name="Expiration")
    hint = page.locator("#expiry-hint").inner_text()
    assert hint.startswith("We recommend 90 days.") and "Leave it blank for no expiration" in hint
    assert expiration.get_by_role("radio", name=re.compile(r"^90 days")).is_checked()
    warning = page.locator("#never-warning")
    custom = page.get_by_label("Custom expiration date (UTC)")
    assert not warning.is_visible() and not custom.is_visible()
    expiration.get_by_role("radio", name=re.compile("^No expiration")).check()
    assert warning.is_visible() and "works until someone revokes it" in warning.inner_text()
    expiration.get_by_role("radio", name=re.compile("^Custom date")).check()
    assert custom.is_visible() and not warning.is_visible()
    page.context.close()

    product_services.policies.set(
        OPERATOR,
        product_services.access.tenant_by_name("Acme").id,  # type: ignore[union-attr]
        max_lifetime_days=60,
        expiration_required=True,
    )
    page = new_page(browser, product_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    expiration = page.get_by_role("group", name="Expiration")
    hint = page.locator("#expiry-hint").inner_text()
    assert hint.startswith("We recommend 60 days, the longest your organisation allows."), hint
    assert "90 days" not in expiration.inner_text() and "blank" not in hint
    recommended = expiration.locator(".choice", has=page.locator(".tag"))
    assert recommended.locator("input").get_attribute("value") == "60" and recommended.locator("input").is_checked()
    shot(page, "api-keys-policy-60-days")
    page.context.close()


def test_last_used_lag_and_your_role_are_on_screen(
    browser: object, product_server: LiveServer, product_services: Services
) -> None:
    seed(product_services, ("developer.manage_tokens", "contacts.read"))
    tenant = product_services.access.tenant_by_name("Acme")
    assert tenant is not None
    product_services.access.create_user(OPERATOR, tenant.id, "new@acme.test", "new-password-1", ["Member"])
    product_services.tokens.create(user_actor(product_services, DEV_EMAIL), "Local dev", ["contacts.read"])

    page = new_page(browser, product_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    note = page.locator("table.tokens-table caption")
    assert (
        note.inner_text()
        == "Last used can lag a request by up to 1 minute: uses are written in batches, not one by one."
    )
    header = page.locator("table.tokens-table th", has_text="Last used")
    assert header.get_attribute("aria-describedby") == note.get_attribute("id")
    lines = header.evaluate(
        "h => { const r = document.createRange(); r.selectNodeContents(h); return r.getClientRects().length; }"
    )
    assert lines == 1, "the Last used header does not wrap"
    page.goto("/system-settings")
    account = page.locator(".card", has=page.get_by_role("heading", name="Your account"))
    assert account.locator("dt", has_text="Role").count() == 1
    assert account.locator("[data-my-roles]").inner_text() == "Developers"
    shot(page, "system-settings-developer")
    page.context.close()

    phone = new_page(browser, product_server, PHONE)
    login(phone, "new@acme.test", "new-password-1")
    phone.goto(KEYS)
    locked = phone.get_by_role("region", name="Unlock developer mode")
    assert "Your role: Member." in locked.inner_text()
    assert no_sideways_scroll(phone) <= 0
    shot(phone, "api-keys-no-permission-phone")
    phone.context.close()


def test_revoke_asks_in_a_dialog_and_one_rotate_dialog_opens_at_a_time(
    browser: object, product_server: LiveServer, product_services: Services
) -> None:
    """Issue 20, item 10: a real dialog names the token; Esc and a click outside close the rotate dialog."""
    seed(product_services, ("developer.manage_tokens", "contacts.read"))
    dev = user_actor(product_services, DEV_EMAIL)
    first, _ = product_services.tokens.create(dev, "Zapier production", ["contacts.read"])
    second, _ = product_services.tokens.create(dev, "Local dev", ["contacts.read"])
    page = new_page(browser, product_server)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)

    page.locator(f"#token-{first.id}").get_by_role("button", name=re.compile("^Rotate")).click()
    rotate = page.locator(f"dialog#rotate-{first.id}")
    assert rotate.evaluate("d => d.open && d.matches(':modal')")
    page.keyboard.press("Escape")
    assert rotate.evaluate("d => !d.open"), "Esc closes it"
    page.locator(f"#token-{first.id}").get_by_role("button", name=re.compile("^Rotate")).click()
    page.mouse.click(5, 5)  # on the backdrop, outside the dialog
    assert rotate.evaluate("d => !d.open"), "a click outside closes it"
    assert page.locator("dialog[open]").count() == 0

    page.locator(f"#token-{second.id}").get_by_role("button", name=re.compile("^Revoke")).click()
    said = confirm_dialog(page, accept=False)
    assert "Revoke “Local dev”?" in said and second.prefix in said
    assert product_services.tokens.get(dev, second.id).status == "active"
    page.locator(f"#token-{second.id}").get_by_role("button", name=re.compile("^Revoke")).click()
    confirm_dialog(page)
    page.get_by_text(f"Token “Local dev” ({second.prefix}) revoked.").wait_for()
    assert product_services.tokens.get(dev, second.id).status == "revoked"
    # Active tokens first: the revoked one is now below.
    names = page.locator("table.tokens-table .token-name").all_inner_texts()
    assert names == ["Zapier production", "Local dev"]
    page.context.close()

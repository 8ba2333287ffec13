"""UI test helpers: one Chromium per test session (Debian's, never downloaded), a real `kbai serve`
per test, data seeded straight through the domain services, and screenshots for docs/ui.md."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kbai.config import Settings
from kbai.services import Services
from kbai.store.audit import Actor
from tests.conftest import FAST_ARGON2, LiveServer, missing_service, start_server

# Screenshots go to test-artifacts/screenshots on every run; KBAI_UPDATE_SCREENSHOTS=1 writes the
# ones shown in docs/ui.md instead (they change whenever the dates on the pages do).
_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = (
    _ROOT / "docs" / "screenshots"
    if os.environ.get("KBAI_UPDATE_SCREENSHOTS") == "1"
    else _ROOT / "test-artifacts" / "screenshots"
)
OPERATOR = Actor.operator()
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@acme.test", "admin-password-1"
DEV_EMAIL, DEV_PASSWORD = "dev@acme.test", "dev-password-1"
DESKTOP = {"width": 1280, "height": 820}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright (``playwright install`` is never run).

    One per test module, not per session: while Playwright's sync API is open it marks an event loop
    running in the main thread, which must not outlive the UI tests into the next file of the worker.
    """
    executable = shutil.which("chromium")
    if executable is None:
        missing_service("Chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def ui_services(database_url: str) -> Iterator[Services]:
    """Services on the test database with the real clock, for seeding what a page then shows."""
    svc = Services.build(Settings(database_url=database_url, **FAST_ARGON2))
    yield svc
    svc.close()


@pytest.fixture
def ui_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """`kbai serve` on the test database; Last used is flushed every half second so the table shows it."""
    server = start_server(database_url, tmp_path, KBAI_LAST_USED_FLUSH_SECONDS="0.5")
    yield server
    server.stop()


@dataclass
class Acme:
    tenant_id: int
    role_id: int  # "Developers": users.read and roles.read, but not developer.manage_tokens
    dev_id: int


def seed_acme(svc: Services, dev_permissions: tuple[str, ...] = ("users.read", "roles.read")) -> Acme:
    tenant, _admin, _ = svc.access.create_tenant(OPERATOR, "Acme", ADMIN_EMAIL, ADMIN_PASSWORD)
    role = svc.access.create_role(OPERATOR, tenant.id, "Developers", list(dev_permissions))
    dev, _ = svc.access.create_user(OPERATOR, tenant.id, DEV_EMAIL, DEV_PASSWORD, [role.id])
    svc.access.create_user(OPERATOR, tenant.id, "ops@acme.test", "ops-password-1", ["Member"])
    return Acme(tenant.id, role.id, dev.id)


def new_page(browser: object, server: LiveServer, viewport: dict[str, int] = DESKTOP):
    context = browser.new_context(  # type: ignore[attr-defined]
        base_url=server.url, viewport=viewport, permissions=["clipboard-read", "clipboard-write"]
    )
    context.set_default_timeout(10_000)
    return context.new_page()


def login(page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/system-settings.*"))


def shot(page, name: str, element=None) -> None:
    """Save docs/screenshots/<name>.png (the whole page, or one element). Refuses while a real token shows."""
    leaked = re.search(r"kbai_pk_(?!0{64})[0-9a-f]{64}", page.content()) is not None
    assert not leaked, "a real token is on the page; mask it before the screenshot"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = str(SCREENSHOTS / f"{name}.png")
    if element is not None:
        element.screenshot(path=path)
    else:
        page.screenshot(path=path, full_page=True)


def user_actor(svc: Services, email: str) -> Actor:
    user = svc.access.user_by_email(email)
    assert user is not None
    return Actor(kind="user", user_id=user.id, tenant_id=user.tenant_id, email=user.email, person_id=user.person_id)


def confirm_dialog(page, accept: bool = True) -> str:
    """Answer the page's confirmation dialog (opened by a Revoke or Deactivate button); returns what it said."""
    dialog = page.locator("dialog#confirm-dialog[open]")
    dialog.wait_for()
    said = dialog.inner_text()
    if accept:
        dialog.locator("[data-confirm-button]").click()
    else:
        dialog.get_by_role("button", name="Cancel").click()
    page.locator("dialog#confirm-dialog").wait_for(state="hidden")
    return said

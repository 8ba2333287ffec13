"""Single sign-on in Chromium: the login page's button, the provider's own login page, and back into kbai.

A real `kbai serve` with KBAI_OIDC_* pointing at the test OpenID provider (oidc-provider on Node). The
person asks for API Keys, signs in at the provider, lands on API Keys of their tenant with the roles of
the claim, and creates a token as on the help page. Screenshots for docs/integration.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kbai import tokenformat as fmt
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, LiveServer, start_server
from tests.identity.conftest import DEV_PERMISSIONS, oidc_provider, provider_keys  # noqa: F401 - fixtures
from tests.identity.provider import CLIENT_ID, CLIENT_SECRET, OidcProvider
from tests.ui.conftest import OPERATOR, new_page, shot

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])
MASK = "kbai_pk_" + "0" * 64


def _serve(database_url: str, tmp_path: Path, provider: OidcProvider, **extra: str) -> LiveServer:
    env = {
        "KBAI_OIDC_ISSUER": provider.issuer,
        "KBAI_OIDC_CLIENT_ID": CLIENT_ID,
        "KBAI_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "KBAI_OIDC_PROVIDER_NAME": "Test Identity",
        "KBAI_OIDC_SCOPES": "org",
        **extra,
    }
    server = start_server(database_url, tmp_path, **env)
    provider.add_client(server.url + "/oidc/callback")
    return server


@pytest.fixture
def seeded(database_url: str) -> Iterator[Services]:
    svc = Services.build(Settings(database_url=database_url, **FAST_ARGON2))
    tenant, _, _ = svc.access.create_tenant(
        OPERATOR, "Acme", "admin@acme.test", "admin-password-1", external_id="org-acme"
    )
    svc.access.create_role(OPERATOR, tenant.id, "Developers", DEV_PERMISSIONS)
    svc.access.create_tenant(OPERATOR, "Globex", "admin@globex.test", "admin-password-1", external_id="org-globex")
    yield svc
    svc.close()


def test_sign_in_through_the_providers_own_page_lands_on_api_keys_of_the_right_tenant(
    browser: Any, database_url: str, tmp_path: Path, oidc_provider: OidcProvider, seeded: Services
) -> None:
    oidc_provider.set_account(
        "alice",
        "alice-password",
        email="alice@acme.test",
        email_verified=True,
        org_id="org-acme",
        org_name="Acme",
        roles=["Developers"],
    )
    server = _serve(database_url, tmp_path, oidc_provider)
    try:
        page = new_page(browser, server)
        violations: list[str] = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto("/system-settings/api-keys")
        page.wait_for_url(re.compile(r".*/login\?next=/system-settings/api-keys$"))
        button = page.get_by_role("link", name="Sign in with Test Identity")
        assert button.is_visible() and page.get_by_label("Password").is_visible()
        shot(page, "sign-in-login")
        button.click()
        page.wait_for_url(re.compile(re.escape(oidc_provider.issuer) + r"/interaction/.*"))
        page.get_by_role("heading", name="Test Identity").wait_for()
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill("wrong-password")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("alert").filter(has_text="Wrong username or password").wait_for()
        page.get_by_label("Password").fill("alice-password")
        shot(page, "sign-in-provider")
        page.get_by_role("button", name="Sign in").click()

        page.wait_for_url(server.url + "/system-settings/api-keys")
        assert page.locator(".tenant").inner_text().strip() == "Acme"
        assert "alice@acme.test" in page.locator(".account").inner_text()
        page.get_by_text("0 of 10 active tokens").wait_for()
        shot(page, "sign-in-landed")

        page.get_by_label("Name").fill("Zapier production")
        page.get_by_label("View users").check()
        page.get_by_role("button", name="Create token").click()
        page.get_by_role("region", name=re.compile("Token .Zapier production. created")).wait_for()
        token = page.locator("#new-token").inner_text().strip()
        assert fmt.is_well_formed(token)
        with httpx.Client(base_url=server.url, timeout=10) as api:
            me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert me["user"]["email"] == "alice@acme.test" and me["scopes"] == ["users.read"]
        assert me["tenant"]["name"] == "Acme" and me["tenant"]["external_id"] == "org-acme"
        assert not violations, violations
        page.context.close()
    finally:
        server.stop()


def test_with_password_login_off_the_page_offers_only_the_provider(
    browser: Any, database_url: str, tmp_path: Path, oidc_provider: OidcProvider, seeded: Services
) -> None:
    server = _serve(
        database_url,
        tmp_path,
        oidc_provider,
        KBAI_PASSWORD_LOGIN="false",
        KBAI_BRAND_NAME="Northwind",
        KBAI_BRAND_ACCENT="#0b7a5a",
        KBAI_PRODUCT_URL="https://app.northwind.example/",
    )
    try:
        page = new_page(browser, server)
        page.goto("/login")
        assert page.get_by_role("link", name="Sign in with Test Identity").is_visible()
        assert page.locator("input[type=password]").count() == 0 and page.locator("form[action='/login']").count() == 0
        accent = page.evaluate("getComputedStyle(document.querySelector('.button-primary')).backgroundColor")
        assert accent == "rgb(11, 122, 90)"
        shot(page, "sign-in-login-sso-only")
        with httpx.Client(base_url=server.url, timeout=10) as api:
            r = api.post("/api/v1/session", json={"email": "admin@acme.test", "password": "admin-password-1"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "password_login_disabled"
        page.context.close()
    finally:
        server.stop()

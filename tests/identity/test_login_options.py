"""What the host product's settings change: password login off, the sign-in button, the brand, external ids.

In-process on SQLite (these are page and settings rules, not storage ones); the CLI cases run the real
``kbai`` console script.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, KBAI_BIN, OPERATOR, build_world
from tests.identity.provider import CLIENT_ID, CLIENT_SECRET
from tests.web.safety import changed_tables, error_problems, page_problems, shown, snapshot

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
ISSUER = "http://127.0.0.1:9"  # never contacted by these tests
OIDC = {
    "oidc_issuer": ISSUER,
    "oidc_client_id": CLIENT_ID,
    "oidc_client_secret": CLIENT_SECRET,
    "oidc_provider_name": "Acme ID",
}


def _client(database_url: str, **settings: object) -> Iterator[tuple[TestClient, Services]]:
    svc = Services.build(Settings(database_url=database_url, **FAST_ARGON2, **settings))  # type: ignore[arg-type]
    build_world(svc)
    with TestClient(
        create_app(svc, start_background=False), raise_server_exceptions=False, follow_redirects=False
    ) as client:
        yield client, svc
    svc.close()


@pytest.fixture
def no_password(database_url: str) -> Iterator[tuple[TestClient, Services]]:
    yield from _client(database_url, password_login=False, **OIDC)


# ---- KBAI_PASSWORD_LOGIN=false ------------------------------------------------------------------
@SQLITE_ONLY
def test_with_password_login_off_the_api_refuses_a_correct_password(no_password: tuple[TestClient, Services]) -> None:
    client, svc = no_password
    before = snapshot(svc.db)
    r = client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
    assert error_problems(r, 403, "password_login_disabled", "Sign in with Acme ID") == [], shown(r)
    assert "kbai_session" not in r.headers.get("set-cookie", "")
    assert changed_tables(before, snapshot(svc.db)) == []


@SQLITE_ONLY
def test_with_password_login_off_the_page_has_no_password_form_and_its_post_is_refused(
    no_password: tuple[TestClient, Services],
) -> None:
    client, svc = no_password
    page = client.get("/login")
    assert page.status_code == 200
    assert 'type="password"' not in page.text and 'action="/login"' not in page.text
    assert 'href="/oidc/login"' in page.text and "Sign in with Acme ID" in page.text
    value = "a-matching-login-csrf-pair"
    before = snapshot(svc.db)
    r = client.post(
        "/login",
        data={"email": "dev@acme.test", "password": "dev-password-1", "csrf_token": value},
        headers={"Cookie": f"kbai_login_csrf={value}"},
    )
    assert page_problems(r, 403, "password_login_disabled", "turned off") == [], r.text[:300]
    assert "kbai_session" not in r.headers.get("set-cookie", "")
    assert changed_tables(before, snapshot(svc.db)) == []


@SQLITE_ONLY
def test_password_login_off_is_valid_without_oidc(database_url: str) -> None:
    for client, _svc in _client(database_url, password_login=False):
        page = client.get("/login").text
        assert 'type="password"' not in page and "/oidc/login" not in page and "turned off" in page
        r = client.post("/api/v1/session", json={"email": "admin@acme.test", "password": "admin-password-1"})
        assert error_problems(r, 403, "password_login_disabled") == [], shown(r)


@SQLITE_ONLY
def test_without_oidc_the_routes_say_so_and_the_form_stays(database_url: str) -> None:
    for client, _svc in _client(database_url):
        page = client.get("/login").text
        assert 'type="password"' in page and "/oidc/login" not in page
        for path in ("/oidc/login", "/oidc/callback?code=x&state=y"):
            r = client.get(path)
            assert page_problems(r, 404, "oidc_not_configured") == [], r.text[:300]


@SQLITE_ONLY
def test_with_both_the_page_offers_both(database_url: str) -> None:
    for client, _svc in _client(database_url, **OIDC):
        page = client.get("/login?next=/system-settings/api-keys").text
        assert 'type="password"' in page
        assert 'href="/oidc/login?next=/system-settings/api-keys"' in page and "Sign in with Acme ID" in page


# ---- the brand ------------------------------------------------------------------------------------
BRAND = {
    "brand_name": "Northwind",
    "brand_logo_url": "https://cdn.northwind.example/logo.svg",
    "brand_accent": "#0B7A5A",
    "product_url": "https://app.northwind.example/home",
}


@SQLITE_ONLY
def test_the_brand_shows_in_the_pages_and_only_the_logo_origin_joins_the_csp(database_url: str) -> None:
    for client, _svc in _client(database_url, **BRAND):
        login = client.get("/login")
        assert "Northwind" in login.text and "Keebai" not in login.text
        assert 'src="https://cdn.northwind.example/logo.svg"' in login.text
        csp = login.headers["content-security-policy"]
        assert "img-src 'self' data: https://cdn.northwind.example;" in csp
        assert "style-src 'self';" in csp and "script-src 'self';" in csp and csp.count("northwind") == 1
        client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
        page = client.get("/system-settings").text
        assert 'href="https://app.northwind.example/home"' in page and "Back to Northwind" in page
        assert "<title>System Settings · Northwind</title>" in page
        assert '<link rel="stylesheet" href="/brand.css' in page and " style=" not in page
        css = client.get("/brand.css")
        assert css.headers["content-type"].startswith("text/css") and "--accent: #0b7a5a;" in css.text


@SQLITE_ONLY
def test_without_brand_settings_the_pages_are_keebai(database_url: str) -> None:
    for client, _svc in _client(database_url):
        client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
        page = client.get("/system-settings")
        assert "Keebai" in page.text and "Back to" not in page.text and "/brand.css" not in page.text
        assert "img-src 'self' data:;" in page.headers["content-security-policy"]


def _kbai(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")}
    return subprocess.run(
        [KBAI_BIN, *args],
        env={
            **clean,
            "KBAI_ARGON2_TIME_COST": "1",
            "KBAI_ARGON2_MEMORY_KIB": "64",
            "KBAI_ARGON2_PARALLELISM": "1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("KBAI_BRAND_ACCENT", "red; background: url(x)", "KBAI_BRAND_ACCENT must be a CSS colour"),
        ("KBAI_BRAND_LOGO_URL", "http://cdn.example/logo.png", "KBAI_BRAND_LOGO_URL must be an https:// URL"),
        ("KBAI_PRODUCT_URL", "javascript:alert(1)", "KBAI_PRODUCT_URL must be an http:// or https:// URL"),
        ("KBAI_OIDC_ISSUER", "http://idp.example", "KBAI_OIDC_ISSUER must be an https:// URL"),
    ],
)
def test_a_bad_setting_stops_kbai_with_one_clear_line(tmp_path: Path, variable: str, value: str, says: str) -> None:
    done = _kbai("db", "upgrade", KBAI_DATABASE_URL=f"sqlite:///{tmp_path}/kbai.db", **{variable: value})
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: setting {variable}: {says}"), done.stderr


def test_an_incomplete_oidc_setting_stops_kbai_with_one_clear_line(tmp_path: Path) -> None:
    done = _kbai(
        "db", "upgrade", KBAI_DATABASE_URL=f"sqlite:///{tmp_path}/kbai.db", KBAI_OIDC_ISSUER="https://idp.example"
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "needs all three of KBAI_OIDC_ISSUER, KBAI_OIDC_CLIENT_ID and KBAI_OIDC_CLIENT_SECRET" in done.stderr


# ---- external ids ---------------------------------------------------------------------------------
def test_external_ids_from_the_cli_show_in_the_json(tmp_path: Path, sqlite_template: Path) -> None:
    import shutil

    db = tmp_path / "kbai.db"
    shutil.copy(sqlite_template, db)
    env = {"KBAI_DATABASE_URL": f"sqlite:///{db}"}
    done = _kbai("tenant", "create", "Globex", "--external-id", "org_42", **env)
    assert done.returncode == 0 and "external id org_42" in done.stdout and "with no users yet" in done.stdout, done
    done = _kbai(
        "user",
        "create",
        "--tenant",
        "Globex",
        "--email",
        "boss@globex.test",
        "--password",
        "boss-password-1",
        "--role",
        "Admin",
        "--external-id",
        "usr_7",
        **env,
    )
    assert done.returncode == 0 and "external id usr_7" in done.stdout, done
    for args, says in (
        (("tenant", "create", "Other", "--external-id", "org_42"), "external id 'org_42' already exists"),
        (
            ("user", "create", "--tenant", "Globex", "--email", "b@globex.test", "--external-id", "usr_7"),
            "external id 'usr_7' in this tenant already exists",
        ),
        (("tenant", "create", "Lonely"), "Give the tenant's first admin email"),
    ):
        done = _kbai(*args, **env)
        assert done.returncode == 1 and done.stderr.startswith("error: ") and says in done.stderr, done.stderr
    svc = Services.build(Settings(database_url=f"sqlite:///{db}", **FAST_ARGON2))
    with TestClient(create_app(svc, start_background=False)) as client:
        r = client.post("/api/v1/session", json={"email": "boss@globex.test", "password": "boss-password-1"})
        assert r.json()["tenant"]["external_id"] == "org_42"
        users = client.get("/api/v1/users").json()["users"]
        assert users == [
            {
                "id": users[0]["id"],
                "email": "boss@globex.test",
                "roles": ["Admin"],
                "active": True,
                "external_id": "usr_7",
            }
        ]
        me = client.get("/api/v1/me").json()
        assert me["tenant"] == {"id": me["tenant"]["id"], "name": "Globex", "external_id": "org_42"}
        assert "token_id" not in me
        token = client.post(
            "/api/v1/tokens",
            json={"name": "t", "scopes": ["users.read"]},
            headers={"X-CSRF-Token": r.json()["csrf_token"]},
        ).json()["token"]
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert me["tenant"]["external_id"] == "org_42" and me["token_id"]
    svc.close()
    assert OPERATOR.kind == "operator"

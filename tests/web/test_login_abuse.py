"""Issue 6, abuse: failed logins are limited per client address (the JSON API and the login form share
the counters, and so do instances with Redis; the per-account throttle, which never locks the owner
out, is in test_login_hardening.py); sessions cannot be fixed by an attacker, end server-side at logout
(form too), and the cookie is Secure when KBAI_COOKIE_SECURE is set.

Client addresses come from X-Forwarded-For, which a live `kbai serve` believes from its trusted proxies
(127.0.0.1 by default), so the per-address cases run against real servers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, REDIS_URL, LiveServer, build_world, start_server
from tests.gateway.helpers import seed

LIMIT = 3
DEV, ADMIN = ("dev@acme.test", "dev-password-1"), ("admin@acme.test", "admin-password-1")
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def _login(server: LiveServer, who: tuple[str, str], ip: str, password: str | None = None) -> httpx.Response:
    with server.client() as c:
        return c.post(
            "/api/v1/session", json={"email": who[0], "password": password or who[1]}, headers={"X-Forwarded-For": ip}
        )


def _fail(server: LiveServer, email: str, ip: str) -> None:
    r = _login(server, (email, ""), ip, password="wrong-password-0")
    assert r.status_code == 401, r.text


def _form_login(server: LiveServer, who: tuple[str, str], ip: str) -> httpx.Response:
    with server.client() as c:
        field = CSRF_FIELD.search(c.get("/login").text)
        assert field is not None
        return c.post(
            "/login",
            data={"email": who[0], "password": who[1], "csrf_token": field.group(1)},
            headers={"X-Forwarded-For": ip},
        )


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    seed(database_url)
    s = start_server(database_url, tmp_path, KBAI_LOGIN_FAILURES_PER_MINUTE=str(LIMIT))
    yield s
    s.stop()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_failures_from_one_address_on_many_accounts_block_that_address(server: LiveServer) -> None:
    for i in range(LIMIT):
        _fail(server, f"nobody{i}@acme.test", "198.51.100.7")  # unknown accounts count as well
    r = _login(server, ADMIN, "198.51.100.7")
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
    assert "from your address" in r.json()["error"]["message"]  # true: this address did fail
    assert 1 <= int(r.headers["retry-after"]) <= 60
    r = _form_login(server, ADMIN, "198.51.100.7")  # the login form counts the same failures
    assert r.status_code == 429 and "Too many" in r.text
    assert _login(server, ADMIN, "198.51.100.8").status_code == 200  # the account itself is fine


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["sqlite"])
def test_with_redis_login_failures_count_across_instances(database_url: str, tmp_path: Path, redis_prefix: str) -> None:
    seed(database_url)
    env = {"KBAI_LOGIN_FAILURES_PER_MINUTE": str(LIMIT), "KBAI_REDIS_URL": REDIS_URL, "KBAI_REDIS_PREFIX": redis_prefix}
    a, b = start_server(database_url, tmp_path, **env), start_server(database_url, tmp_path, **env)
    try:
        _fail(a, DEV[0], "203.0.113.1")
        _fail(b, ADMIN[0], "203.0.113.1")
        assert _login(a, DEV, "203.0.113.1").status_code == 200  # two failures: still open everywhere
        _fail(a, "nobody@acme.test", "203.0.113.1")
        assert _login(b, DEV, "203.0.113.1").status_code == 429  # the third failure, made on A, closes B
        assert _login(a, DEV, "203.0.113.2").status_code == 200  # for that address only
    finally:
        a.stop()
        b.stop()


# ---- sessions, in-process -----------------------------------------------------------------------
def _app(database_url: str, **settings: object) -> tuple[Services, TestClient]:
    svc = Services.build(Settings(database_url=database_url, **FAST_ARGON2, **settings))  # type: ignore[arg-type]
    build_world(svc)
    return svc, TestClient(create_app(svc, start_background=False), follow_redirects=False)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("secure", [True, False])
def test_the_session_cookie_is_secure_when_configured(database_url: str, secure: bool) -> None:
    svc, client = _app(database_url, cookie_secure=secure)
    with client:
        api = client.post("/api/v1/session", json={"email": DEV[0], "password": DEV[1]}).headers["set-cookie"]
        client.cookies.clear()
        page = client.get("/login")
        form = client.post(
            "/login", data={"email": DEV[0], "password": DEV[1], "csrf_token": CSRF_FIELD.search(page.text).group(1)}
        )  # type: ignore[union-attr]
        cookies = [api, form.headers["set-cookie"], page.headers["set-cookie"]]
    svc.close()
    for cookie in cookies:
        attrs = [a.strip().lower() for a in cookie.split(";")]
        assert ("secure" in attrs) is secure, cookie.split("=", 1)[0]
        assert "httponly" in attrs


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_planted_session_id_is_never_adopted(database_url: str) -> None:
    """Session fixation: a cookie value chosen by an attacker before login never becomes a session."""
    svc, client = _app(database_url)
    planted = "attacker-chosen-" + uuid.uuid4().hex
    with client:
        client.cookies.set("kbai_session", planted)
        r = client.post("/api/v1/session", json={"email": DEV[0], "password": DEV[1]})
        assert r.status_code == 200
        issued = r.cookies.get("kbai_session")
        assert issued and issued != planted
        client.cookies.clear()
        client.cookies.set("kbai_session", planted)
        assert client.get("/api/v1/me").status_code == 401
    svc.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_logout_through_the_form_ends_the_session_server_side(database_url: str) -> None:
    svc, client = _app(database_url)
    with client:
        csrf = client.post("/api/v1/session", json={"email": DEV[0], "password": DEV[1]}).json()["csrf_token"]
        cookie = client.cookies.get("kbai_session")
        assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
        client.cookies.set("kbai_session", cookie or "")  # the old cookie, replayed
        assert client.get("/api/v1/me").status_code == 401
        assert client.get("/system-settings").status_code == 303  # to the login page
    svc.close()

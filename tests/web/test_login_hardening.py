"""Issue 13, the login findings: a password reset ends every session (6), concurrent wrong passwords
cannot pass the failed-login limit (8), a non-ASCII CSRF value is a 4xx, not a 500 (10), a deactivated
account answers like a wrong password (11), and nobody can lock another person out of their account
(15). Storage cases run on SQLite and PostgreSQL; concurrency cases against real `kbai serve`
processes, with in-memory counters and with Redis.
"""

from __future__ import annotations

import math
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.config import Settings
from kbai.ratelimit import FailureLimiter, LoginRefused, LoginReserved, LoginThrottle
from kbai.services import Services
from kbai.store.models import LoginSession
from tests.conftest import KBAI_BIN, OPERATOR, REDIS_URL, LiveServer, World, server_env, start_server
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
    with (
        live_server.client() as api,
        live_server.client(follow_redirects=False) as browser,
        live_server.client() as admin,
    ):
        for c in (api, browser):  # two sessions of dev: the API one and a browser one
            assert c.post("/api/v1/session", json={"email": DEV_EMAIL, "password": DEV_PASSWORD}).status_code == 200
        assert (
            admin.post("/api/v1/session", json={"email": "admin@acme.test", "password": "admin-password-1"}).status_code
            == 200
        )
        assert api.get("/api/v1/me").status_code == 200
        assert browser.get("/system-settings").status_code == 200
        done = subprocess.run(
            [KBAI_BIN, "user", "set-password", "--email", DEV_EMAIL, "--password", NEW_PASSWORD],
            env=server_env(database_url),
            capture_output=True,
            text=True,
            timeout=120,
        )
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


def test_finding6_a_login_that_checked_the_old_password_opens_no_session(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reset lands between the login's password check and its session insert: no session."""
    svc = world.services
    checked = svc.access.authenticate_person

    def reset_right_after_the_check(email: str, password: str) -> Any:
        person = checked(email, password)
        svc.access.set_password(OPERATOR, world.dev.user_id, NEW_PASSWORD)  # (a membership of that person)
        return person

    monkeypatch.setattr(svc.access, "authenticate_person", reset_right_after_the_check)
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
    with TestClient(
        create_app(world.services, start_background=False), raise_server_exceptions=False, follow_redirects=False
    ) as c:
        c.get("/login")  # sets the login-CSRF cookie
        r = c.post("/login", data={"email": DEV_EMAIL, "password": DEV_PASSWORD, "csrf_token": value})
        assert r.status_code == 403 and "expired" in r.text
        assert "kbai_session" not in r.cookies


@pytest.mark.parametrize("value", NON_ASCII)
def test_finding10_non_ascii_csrf_on_session_forms_and_the_api_is_403_not_500(world: World, value: str) -> None:
    with TestClient(
        create_app(world.services, start_background=False), raise_server_exceptions=False, follow_redirects=False
    ) as c:
        assert c.post("/api/v1/session", json={"email": DEV_EMAIL, "password": DEV_PASSWORD}).status_code == 200
        r = c.post(
            "/system-settings/api-keys",
            data={"name": "x", "scopes": "users.read", "expiry": "never", "csrf_token": value},
        )
        assert r.status_code == 403 and "expired" in r.text
        r = c.post("/logout", data={"csrf_token": value})
        assert r.status_code == 403
        r = c.post("/api/v1/tokens", json={"name": "x", "scopes": []}, headers={"X-CSRF-Token": value.encode()})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        assert c.get("/api/v1/tokens").json()["tokens"] == []


def test_finding10_webhook_signature_check_takes_non_ascii(world: World) -> None:
    from kbai.delivery import webhooks

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


def test_finding11_deactivated_account_pays_the_full_verification(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
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


# ---- finding 8: parallel wrong passwords never pass the failed-login limit -------------------------
PARALLEL, LIMIT = 14, 10


def _expensive_dev_password(database_url: str) -> None:
    """Give dev a hash that takes a real while to check, as production's does: the window in which
    parallel guesses could all pass a check-then-count limiter before any failure is counted."""
    svc = Services.build(
        Settings(database_url=database_url, argon2_time_cost=2, argon2_memory_kib=32768, argon2_parallelism=1)
    )
    try:
        user = svc.access.user_by_email(DEV_EMAIL)
        assert user is not None
        svc.access.set_password(OPERATOR, user.id, DEV_PASSWORD)
    finally:
        svc.close()


def _parallel(server: LiveServer, n: int, send: Callable[[httpx.Client, int], httpx.Response]) -> list[int]:
    clients = [server.client() for _ in range(n)]
    for c in clients:  # connect first, so that the requests themselves start together
        c.get("/healthz")
    start = threading.Barrier(n)
    statuses: list[int] = [0] * n

    def run(i: int) -> None:
        start.wait()
        statuses[i] = send(clients[i], i).status_code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for c in clients:
        c.close()
    return statuses


@pytest.mark.parametrize("counters", ["memory", "redis"])
def test_finding8_parallel_wrong_passwords_never_pass_the_failed_login_limit(
    database_url: str, tmp_path: Path, counters: str, request: pytest.FixtureRequest
) -> None:
    seed(database_url)
    _expensive_dev_password(database_url)
    env = {"KBAI_LOGIN_FAILURES_PER_MINUTE": str(LIMIT)}
    if counters == "redis":
        env.update(KBAI_REDIS_URL=REDIS_URL, KBAI_REDIS_PREFIX=request.getfixturevalue("redis_prefix"))
    server = start_server(database_url, tmp_path, **env)
    try:
        statuses = _parallel(
            server,
            PARALLEL,
            lambda c, i: c.post(
                "/api/v1/session",
                json={"email": DEV_EMAIL, "password": f"wrong-guess-{i:04d}"},
                headers={"X-Forwarded-For": "203.0.113.50"},
            ),
        )
        with server.client() as c:
            blocked = c.post(
                "/api/v1/session",
                json={"email": DEV_EMAIL, "password": DEV_PASSWORD},
                headers={"X-Forwarded-For": "203.0.113.50"},
            )
            elsewhere = c.post(
                "/api/v1/session",
                json={"email": DEV_EMAIL, "password": DEV_PASSWORD},
                headers={"X-Forwarded-For": "203.0.113.51"},
            )
    finally:
        server.stop()
    # Exactly LIMIT guesses were checked; the others were refused before their password was looked at.
    assert sorted(statuses) == [401] * LIMIT + [429] * (PARALLEL - LIMIT), statuses
    assert blocked.status_code == 429 and "from your address" in blocked.json()["error"]["message"]
    assert elsewhere.status_code == 200  # the account is not locked: only the guessing address is


@pytest.mark.parametrize("backend", ["sqlite"])
def test_finding8_a_right_password_gives_its_reservation_back(world: World) -> None:
    svc = world.services
    limit = svc.settings.login_failures_per_minute
    for _ in range(limit * 3):  # many successes from one address never add up to a block
        svc.sessions.login(DEV_EMAIL, DEV_PASSWORD, "192.0.2.7")
    for _ in range(limit):
        with raises_code("invalid_credentials"):
            svc.sessions.login(DEV_EMAIL, "wrong-guess", "192.0.2.7")
    with raises_code("rate_limited"):
        svc.sessions.login(DEV_EMAIL, DEV_PASSWORD, "192.0.2.7")


# ---- finding 15: nobody can lock someone else out of their account ---------------------------------
ATTACK = {
    "KBAI_LOGIN_FAILURES_PER_MINUTE": "3",
    "KBAI_LOGIN_ACCOUNT_FAILURES_PER_DAY": "4",
    "KBAI_LOGIN_ACCOUNT_MAX_DELAY_SECONDS": "2",
}
OWNER_HOME = "192.0.2.10"


def _session(server: LiveServer, ip: str, password: str, email: str = DEV_EMAIL) -> httpx.Response:
    with server.client() as c:
        return c.post("/api/v1/session", json={"email": email, "password": password}, headers={"X-Forwarded-For": ip})


def _form(server: LiveServer, ip: str, password: str) -> httpx.Response:
    with server.client(follow_redirects=False) as c:
        return c.post(
            "/login",
            data={"email": DEV_EMAIL, "password": password, "csrf_token": _form_csrf(c)},
            headers={"X-Forwarded-For": ip},
        )


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("counters", ["memory", "redis"])
def test_finding15_a_distributed_attack_slows_the_attacker_and_never_locks_the_owner_out(
    database_url: str, tmp_path: Path, counters: str, request: pytest.FixtureRequest
) -> None:
    seed(database_url)
    env = dict(ATTACK)
    if counters == "redis":
        env.update(KBAI_REDIS_URL=REDIS_URL, KBAI_REDIS_PREFIX=request.getfixturevalue("redis_prefix"))
    server = start_server(database_url, tmp_path, **env)
    try:
        assert _session(server, OWNER_HOME, DEV_PASSWORD).status_code == 200  # the owner's usual address
        # 30 guesses from 30 addresses, each far below the per-address limit: the old per-account lock
        # (10 a minute) locked the owner out after the tenth.
        began = time.monotonic()
        answers = [_session(server, f"198.51.100.{i}", f"wrong-guess-{i}") for i in range(1, 31)]
        elapsed = time.monotonic() - began
        statuses = [r.status_code for r in answers]
        # The day's 4 free failures, then one guess that starts a delay, then one guess per delay.
        assert statuses[:5] == [401] * 5 and statuses[5] == 429
        assert statuses.count(401) <= 5 + math.ceil(elapsed / 2), (statuses, elapsed)  # delays are >= 2 s
        for r in answers:
            if r.status_code == 429:
                message = r.json()["error"]["message"]
                assert "for this email" in message and "your address" not in message, message
                assert 1 <= int(r.headers["retry-after"]) <= 2
        # The owner, from home, gets in at once through the API and the form, and may mistype.
        assert _session(server, OWNER_HOME, "typo-typo-typo").status_code == 401
        assert _session(server, OWNER_HOME, DEV_PASSWORD).status_code == 200
        assert _form(server, OWNER_HOME, DEV_PASSWORD).status_code == 303
        # Another account is untouched; so is an address that only tried once.
        assert _session(server, "198.51.100.200", "admin-password-1", "admin@acme.test").status_code == 200
        # From an address the account never used, the owner is slowed, not locked out: wait, then in.
        r = _session(server, "192.0.2.99", DEV_PASSWORD)
        if r.status_code == 429:
            assert "for this email" in r.json()["error"]["message"]
            time.sleep(int(r.headers["retry-after"]))
            r = _session(server, "192.0.2.99", DEV_PASSWORD)
        assert r.status_code == 200, (r.text, dict(r.headers))
    finally:
        server.stop()


def _throttle(per_address: int = 1000, per_day: int = 2, max_delay: int = 300) -> tuple[LoginThrottle, Any]:
    limiter = FailureLimiter(None, "kbai", 60, per_address)
    return LoginThrottle(limiter, per_day, max_delay), limiter.storage


def test_finding15_the_delay_doubles_per_failure_up_to_the_cap_and_refusals_cost_nothing() -> None:
    throttle, storage = _throttle(per_day=2, max_delay=16)
    _failures, gate, _familiar = throttle._keys(DEV_EMAIL, "x")
    seen: list[int] = []
    for i in range(2):  # the free failures
        assert isinstance(throttle.reserve(DEV_EMAIL, f"198.51.100.{i}"), LoginReserved)
    for i in range(7):
        assert isinstance(throttle.reserve(DEV_EMAIL, f"203.0.113.{i}"), LoginReserved)  # evaluated, fails
        refused = throttle.reserve(DEV_EMAIL, f"203.0.113.{100 + i}")
        assert isinstance(refused, LoginRefused) and refused.why == "account"
        again = throttle.reserve(DEV_EMAIL, f"203.0.113.{150 + i}")  # refusals do not grow the delay
        assert isinstance(again, LoginRefused) and again.retry_after == refused.retry_after
        seen.append(refused.retry_after)
        storage.clear(gate)  # the delay has passed
    assert seen == [2, 4, 8, 16, 16, 16, 16]


def test_finding15_familiar_addresses_pass_the_account_delay_and_unknown_emails_are_throttled_alike() -> None:
    throttle, _storage = _throttle(per_day=1)
    home = throttle.reserve(DEV_EMAIL, OWNER_HOME)
    assert isinstance(home, LoginReserved)
    throttle.give_back(home, signed_in=True)  # the owner signed in from home once
    answers = {}
    for email in (DEV_EMAIL, "nobody@acme.test"):
        for i in range(3):
            throttle.reserve(email, f"198.51.100.{i}")  # failures (kept)
        refused = throttle.reserve(email, "198.51.100.50")
        answers[email] = refused
    assert answers[DEV_EMAIL] == answers["nobody@acme.test"]  # nothing tells which accounts exist
    assert isinstance(answers[DEV_EMAIL], LoginRefused) and answers[DEV_EMAIL].why == "account"
    for _ in range(5):  # home is never held back by the account's delay
        assert isinstance(throttle.reserve(DEV_EMAIL, OWNER_HOME), LoginReserved)


def test_finding15_parallel_attempts_past_the_free_failures_get_one_evaluation_per_delay() -> None:
    throttle, _storage = _throttle(per_day=3)
    for i in range(3):
        throttle.reserve(DEV_EMAIL, f"198.51.100.{i}")
    results: list[object] = []
    lock = threading.Lock()
    start = threading.Barrier(40)

    def attempt(i: int) -> None:
        start.wait()
        r = throttle.reserve(DEV_EMAIL, f"203.0.113.{i}")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, LoginReserved) for r in results) == 1

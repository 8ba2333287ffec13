"""Issue 3: the whole token story over real HTTP against a running `kbai serve`, on SQLite and PostgreSQL.

Log in, create, list, use, revoke; then every way a request is refused: revoked, expired, missing
scope, the 11th token, an unheld scope, a missing CSRF header, a token trying to mint a token, and
a logged-out session.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from kbai.cache.bus import for_settings
from kbai.config import Settings
from kbai.store import Database
from kbai.store.models import Token
from tests.conftest import LiveServer
from tests.gateway.helpers import bearer, create_token, listed, login, seed

TOKEN_RE = re.compile(r"kbai_pk_[0-9a-f]{64}")


def parse_time(value: object) -> datetime:
    assert isinstance(value, str)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def www_authenticate(r: httpx.Response) -> str:
    return r.headers.get("www-authenticate", "")


@pytest.fixture
def server(live_server: LiveServer, database_url: str) -> LiveServer:
    seed(database_url)
    return live_server


def test_login_create_list_use_revoke(server: LiveServer) -> None:
    with server.client() as session, server.client() as anon:
        csrf = login(session)
        before = datetime.now(UTC).replace(microsecond=0)
        made = create_token(session, csrf, "Zapier production", ["users.read", "roles.read"], expires_in_days=90)
        token = made.plaintext
        well_formed = TOKEN_RE.fullmatch(token) is not None
        assert well_formed, "the token is not kbai_pk_ + 64 lowercase hex"
        prefix = token[:12]
        assert made.json["prefix"] == prefix
        assert made.json["status"] == "active"

        # The list: the six columns' data, and never the token itself.
        r = session.get("/api/v1/tokens")
        assert r.status_code == 200
        leaked = token in r.text
        assert not leaked, "GET /api/v1/tokens leaks the plaintext token"
        row = {int(t["id"]): t for t in r.json()["tokens"]}[made.id]
        assert row["name"] == "Zapier production"
        assert row["prefix"] == prefix
        assert sorted(row["scopes"]) == ["roles.read", "users.read"]
        assert row["last_used_at"] is None
        assert row["status"] == "active"
        created = parse_time(row["created_at"])
        expires = parse_time(row["expires_at"])
        assert expires - created == timedelta(days=90)
        assert before <= created
        assert "token" not in row

        # Use it: /me knows the user, the tenant, the token and its scopes.
        r = anon.get("/api/v1/me", headers=bearer(token))
        assert r.status_code == 200, r.text
        me = r.json()
        assert me["auth"] == "token"
        assert me["token_id"] == made.id
        assert me["user"]["email"] == "dev@acme.test"
        assert me["tenant"]["name"] == "Acme"
        assert sorted(me["scopes"]) == ["roles.read", "users.read"]
        r = anon.get("/api/v1/roles", headers=bearer(token))
        assert r.status_code == 200, r.text

        # Revoke from the session; the very next request with the token is refused.
        r = session.post(f"/api/v1/tokens/{made.id}/revoke", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "revoked"
        r = anon.get("/api/v1/me", headers=bearer(token))
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_token"
        challenge = www_authenticate(r)
        assert challenge.startswith("Bearer ")
        assert 'error="invalid_token"' in challenge
        assert "revoked" in challenge
        leaked = token in r.text or token in challenge
        assert not leaked, "the 401 echoes the token"
        assert listed(session)[made.id]["status"] == "revoked"

        # Revoking again is idempotent, and the token stays dead.
        r = session.post(f"/api/v1/tokens/{made.id}/revoke", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["status"] == "revoked"
        r = anon.get("/api/v1/me", headers=bearer(token))
        assert r.status_code == 401


def test_token_revokes_itself(server: LiveServer) -> None:
    with server.client() as session, server.client() as anon:
        csrf = login(session)
        made = create_token(session, csrf, "cron", [])
        r = anon.post(f"/api/v1/tokens/{made.id}/revoke", headers=bearer(made.plaintext))
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "revoked"
        r = anon.get("/api/v1/me", headers=bearer(made.plaintext))
        assert r.status_code == 401
        assert 'error="invalid_token"' in www_authenticate(r)


def test_expired_token_is_refused(server: LiveServer, database_url: str) -> None:
    with server.client() as session, server.client() as anon:
        csrf = login(session)
        made = create_token(session, csrf, "short-lived", ["users.read"], expires_in_days=7)
        r = anon.get("/api/v1/me", headers=bearer(made.plaintext))
        assert r.status_code == 200, r.text

        # The server runs on the real clock, so time passes by moving expires_at into the past.
        db = Database(database_url)
        try:
            with db.write() as s:
                row = s.scalar(select(Token).where(Token.id == made.id))
                assert row is not None
                row.expires_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
                digest = row.digest
            # A direct database edit bypasses cache invalidation, so announce it on the deployment's
            # invalidation channel as another instance's change would be (the server caches for minutes).
            bus = for_settings(Settings(database_url=database_url), db)
            bus.publish(digest)
        finally:
            db.dispose()

        deadline = time.monotonic() + 10
        while True:
            r = anon.get("/api/v1/me", headers=bearer(made.plaintext))
            if r.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_token"
        challenge = www_authenticate(r)
        assert 'error="invalid_token"' in challenge
        assert "expired" in challenge
        assert listed(session)[made.id]["status"] == "expired"


def test_missing_scope_is_403_insufficient_scope(server: LiveServer) -> None:
    with server.client() as session, server.client() as anon:
        csrf = login(session)
        users_only = create_token(session, csrf, "users only", ["users.read"])
        r = anon.get("/api/v1/users", headers=bearer(users_only.plaintext))
        assert r.status_code == 200, r.text
        r = anon.get("/api/v1/roles", headers=bearer(users_only.plaintext))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "insufficient_scope"
        challenge = www_authenticate(r)
        assert 'error="insufficient_scope"' in challenge
        assert 'scope="roles.read"' in challenge


def test_eleventh_token_is_409_and_revoked_ones_do_not_count(server: LiveServer) -> None:
    with server.client() as session:
        csrf = login(session)
        made = [create_token(session, csrf, f"integration {i}", []) for i in range(10)]
        r = session.post("/api/v1/tokens", json={"name": "one too many", "scopes": []}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 409
        error = r.json()["error"]
        assert error["code"] == "token_limit_reached"
        assert "limit is 10" in error["message"]
        assert "10 active" in error["message"]
        assert len(listed(session)) == 10

        r = session.post(f"/api/v1/tokens/{made[0].id}/revoke", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200
        create_token(session, csrf, "one too many", [])
        assert len(listed(session)) == 11


def test_unknown_or_unheld_scope_is_422_naming_it(server: LiveServer) -> None:
    with server.client() as session:
        csrf = login(session)
        r = session.post(
            "/api/v1/tokens",
            json={"name": "auditor", "scopes": ["users.read", "audit.read"]},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "unheld_scope"
        assert "audit.read" in r.json()["error"]["message"]

        r = session.post(
            "/api/v1/tokens", json={"name": "typo", "scopes": ["users.raed"]}, headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "unknown_scope"
        assert "users.raed" in r.json()["error"]["message"]
        assert listed(session) == {}


def test_cookie_writes_need_the_csrf_header(server: LiveServer) -> None:
    with server.client() as session:
        csrf = login(session)
        for headers in ({}, {"X-CSRF-Token": "not-the-token"}):
            r = session.post("/api/v1/tokens", json={"name": "csrf", "scopes": []}, headers=headers)
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "csrf_failed"
        assert listed(session) == {}
        made = create_token(session, csrf, "csrf", [])
        r = session.post(f"/api/v1/tokens/{made.id}/revoke")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "csrf_failed"
        assert listed(session)[made.id]["status"] == "active"


def test_a_token_cannot_manage_tokens(server: LiveServer) -> None:
    with server.client() as session, server.client() as anon:
        csrf = login(session)
        made = create_token(session, csrf, "ci", ["users.read"])
        r = anon.post(
            "/api/v1/tokens", json={"name": "minted by a token", "scopes": []}, headers=bearer(made.plaintext)
        )
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "session_required"
        r = anon.get("/api/v1/tokens", headers=bearer(made.plaintext))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "session_required"
        r = anon.post(f"/api/v1/tokens/{made.id}/rotate", headers=bearer(made.plaintext))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "session_required"
        assert list(listed(session)) == [made.id]


def test_logout_ends_the_session(server: LiveServer) -> None:
    with server.client() as session:
        csrf = login(session)
        old_cookie = session.cookies["kbai_session"]
        r = session.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204
        r = session.get("/api/v1/tokens")
        assert r.status_code == 401
    # The old cookie, replayed by anyone, is dead on the server side too.
    with server.client(cookies={"kbai_session": old_cookie}) as replay:
        r = replay.get("/api/v1/tokens")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "not_authenticated"
        r = replay.get("/api/v1/me")
        assert r.status_code == 401

"""Issue 3 / rule 12: failed token authentication is rate limited per client IP, and with Redis the
counter is shared by every instance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL, LiveServer, missing_service, start_server
from tests.gateway.helpers import Created, bearer, create_token, login, seed

LIMIT = 5
BAD_TOKENS = ["kbai_pk_" + "0" * 64, "kbai_pk_short", "kbai_pk_" + "1" * 64, "nope", "kbai_pk_" + "2" * 64]


def good_token(server: LiveServer) -> Created:
    with server.client() as session:
        csrf = login(session)
        return create_token(session, csrf, f"token {uuid.uuid4().hex[:6]}", ["users.read"])


def fail_limit_times(server: LiveServer, **headers: str) -> None:
    with server.client() as c:
        for bad in BAD_TOKENS[:LIMIT]:
            r = c.get("/api/v1/me", headers={**headers, **bearer(bad)})
            assert r.status_code == 401, r.text


def assert_rate_limited(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 60
    error = r.json()["error"]
    assert error["code"] == "rate_limited"
    assert f"{retry_after} seconds" in error["message"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_failures_block_the_ip_even_for_a_good_token(database_url: str, tmp_path: Path) -> None:
    seed(database_url)
    server = start_server(database_url, tmp_path, KBAI_AUTH_FAILURES_PER_MINUTE=str(LIMIT))
    try:
        token = good_token(server)
        with server.client() as c:
            # Successes never count: many good requests, then still room for LIMIT failures.
            for _ in range(LIMIT * 2):
                r = c.get("/api/v1/me", headers=bearer(token.plaintext))
                assert r.status_code == 200
        fail_limit_times(server)
        with server.client() as c:
            r = c.get("/api/v1/me", headers=bearer(token.plaintext))
            assert_rate_limited(r)
            r = c.get("/api/v1/me", headers=bearer(BAD_TOKENS[0]))
            assert_rate_limited(r)
            # Another client IP (as reported by a trusted proxy, here 127.0.0.1) is not blocked.
            r = c.get("/api/v1/me", headers={**bearer(token.plaintext), "X-Forwarded-For": "203.0.113.7"})
            assert r.status_code == 200, r.text
            # The forward-auth check refuses the blocked IP too; nginx only understands 401/403 there.
            r = c.get("/auth/check", headers=bearer(token.plaintext))
            assert r.status_code == 401
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
            assert 1 <= int(r.headers["retry-after"]) <= 60
            r = c.get("/auth/check", headers={**bearer(token.plaintext), "X-Forwarded-For": "203.0.113.7"})
            assert r.status_code == 200, r.text
            # Sessions are not token authentication: the logged-in UI keeps working.
            login(c)
            r = c.get("/api/v1/tokens")
            assert r.status_code == 200
    finally:
        server.stop()


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["sqlite"])
def test_redis_shares_the_counter_between_instances(database_url: str, tmp_path: Path, redis_prefix: str) -> None:
    seed(database_url)
    env = {"KBAI_AUTH_FAILURES_PER_MINUTE": str(LIMIT), "KBAI_REDIS_URL": REDIS_URL, "KBAI_REDIS_PREFIX": redis_prefix}
    a = start_server(database_url, tmp_path, **env)
    b = start_server(database_url, tmp_path, **env)
    try:
        token = good_token(a)
        with b.client() as c:
            r = c.get("/api/v1/me", headers=bearer(token.plaintext))
            assert r.status_code == 200
            # Fewer failures than the limit on A leave B open...
            fail_limit_times_on = LIMIT - 1
            with a.client() as ca:
                for bad in BAD_TOKENS[:fail_limit_times_on]:
                    r = ca.get("/api/v1/me", headers=bearer(bad))
                    assert r.status_code == 401
            r = c.get("/api/v1/me", headers=bearer(token.plaintext))
            assert r.status_code == 200
            # ...one more on A, and B refuses this IP.
            with a.client() as ca:
                r = ca.get("/api/v1/me", headers=bearer(BAD_TOKENS[-1]))
                assert r.status_code == 401
            r = c.get("/api/v1/me", headers=bearer(token.plaintext))
            assert_rate_limited(r)
        keys = list(redis.Redis.from_url(REDIS_URL).scan_iter(match=f"{redis_prefix}*"))
        assert keys, "no rate-limit keys under KBAI_REDIS_PREFIX"
    finally:
        a.stop()
        b.stop()

"""Issue 3 / rule 12: failed token authentication is rate limited per client IP, and with Redis the
counter is shared by every instance. SPEC (issue 13 finding 14): a token that verifies is always served;
while an address is blocked only its failing attempts are refused (429; 401 + Retry-After at /auth/check).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL, LiveServer, start_server
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


def assert_blocked_at_auth_check(r: httpx.Response) -> None:
    """The forward-auth check refuses a blocked attempt with 401: nginx only understands 401/403 there."""
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert 1 <= int(r.headers["retry-after"]) <= 60


@pytest.mark.parametrize("backend", ["sqlite"])
def test_failures_block_failing_attempts_but_a_good_token_is_served(database_url: str, tmp_path: Path) -> None:
    """Issue 13 finding 14: bad tokens from one shared egress address (Zapier, n8n cloud) must not lock
    out every good token from it. Failures still count, and the address's failing attempts get 429."""
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
            for bad in BAD_TOKENS:  # unknown and malformed alike: refused as over the limit
                assert_rate_limited(c.get("/api/v1/me", headers=bearer(bad)))
            # The good token from the same address is served, again and again.
            for _ in range(LIMIT * 2):
                r = c.get("/api/v1/me", headers=bearer(token.plaintext))
                assert r.status_code == 200, r.text
                r = c.get("/auth/check", headers=bearer(token.plaintext), params={"scope": "users.read"})
                assert r.status_code == 200, r.text
                assert r.headers["x-kbai-token-id"] == str(token.id)
            # The forward-auth check refuses a failing attempt from the blocked address with 401 + Retry-After.
            assert_blocked_at_auth_check(c.get("/auth/check", headers=bearer(BAD_TOKENS[0])))
            # Another client IP (as reported by a trusted proxy, here 127.0.0.1) is not blocked.
            r = c.get("/api/v1/me", headers={**bearer(BAD_TOKENS[0]), "X-Forwarded-For": "203.0.113.7"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
            # Sessions are not token authentication: the logged-in UI keeps working.
            login(c)
            r = c.get("/api/v1/tokens")
            assert r.status_code == 200
    finally:
        server.stop()


@pytest.fixture
def redis_pair(database_url: str, tmp_path: Path, redis_prefix: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    seed(database_url)
    env = {"KBAI_AUTH_FAILURES_PER_MINUTE": str(LIMIT), "KBAI_REDIS_URL": REDIS_URL, "KBAI_REDIS_PREFIX": redis_prefix}
    a = start_server(database_url, tmp_path, **env)
    try:
        b = start_server(database_url, tmp_path, **env)
    except Exception:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["sqlite"])
def test_redis_shares_the_counter_between_instances(
    redis_pair: tuple[LiveServer, LiveServer], redis_prefix: str
) -> None:
    a, b = redis_pair
    token = good_token(a)
    ip = {"X-Forwarded-For": "198.51.100.20"}
    with a.client() as ca, b.client() as cb:
        assert cb.get("/api/v1/me", headers=bearer(token.plaintext)).status_code == 200
        # Failures spread over both instances add up: LIMIT - 1 on A and one on B use up the limit...
        for bad in BAD_TOKENS[: LIMIT - 1]:
            assert ca.get("/api/v1/me", headers={**ip, **bearer(bad)}).status_code == 401
        assert cb.get("/api/v1/me", headers={**ip, **bearer(BAD_TOKENS[-1])}).status_code == 401
        # ...so the next failing attempt is refused on both, 429 on the API and 401 + Retry-After at /auth/check.
        for client in (ca, cb):
            assert_rate_limited(client.get("/api/v1/me", headers={**ip, **bearer(BAD_TOKENS[0])}))
            assert_blocked_at_auth_check(client.get("/auth/check", headers={**ip, **bearer(BAD_TOKENS[0])}))
            # A good token from the blocked address is still served on both.
            assert client.get("/api/v1/me", headers={**ip, **bearer(token.plaintext)}).status_code == 200
            assert client.get("/auth/check", headers={**ip, **bearer(token.plaintext)}).status_code == 200
    keys = list(redis.Redis.from_url(REDIS_URL).scan_iter(match=f"{redis_prefix}*"))
    assert keys, "no rate-limit keys under KBAI_REDIS_PREFIX"


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_block_on_one_instance_reaches_the_other_within_one_second(
    redis_pair: tuple[LiveServer, LiveServer], redis_prefix: str
) -> None:
    """B learns of the block over the invalidation bus: its failing attempts are refused without
    counting, so even with the shared counters wiped, B refuses the blocked address."""
    a, b = redis_pair
    ip = {"X-Forwarded-For": "198.51.100.21"}
    with a.client() as ca, b.client() as cb:
        for bad in BAD_TOKENS[:LIMIT]:
            assert ca.get("/api/v1/me", headers={**ip, **bearer(bad)}).status_code == 401
        blocked_at = time.monotonic()
        client = redis.Redis.from_url(REDIS_URL)
        counters = list(client.scan_iter(match=f"{redis_prefix}:limits*"))
        assert counters, "the failures were not counted in Redis"
        client.delete(*counters)
        client.close()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - blocked_at)))
        # One probe each: a probe B did not know to refuse would count (and could block by itself).
        assert_rate_limited(cb.get("/api/v1/me", headers={**ip, **bearer(BAD_TOKENS[0])}))
        assert_blocked_at_auth_check(cb.get("/auth/check", headers={**ip, **bearer(BAD_TOKENS[2])}))
        assert_rate_limited(ca.get("/api/v1/me", headers={**ip, **bearer(BAD_TOKENS[0])}))

"""`kbai serve --workers 2`: two processes on one port behave as one (issue 16), on SQLite alone, on
PostgreSQL alone and on PostgreSQL + Redis.

The cache max age is raised to 10 minutes, so only the invalidation bus (the SQLite poller,
LISTEN/NOTIFY, Redis pub/sub) can explain a worker refusing a token another worker revoked; the
last-used flush runs once an hour, so only the flush on a graceful stop can put the counts in the
database. Every check goes over a fresh connection, which the kernel hands to either worker; the
per-process /metrics show that both served.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from kbai.store import Database
from kbai.store.models import Token, TokenUsageHour
from tests.conftest import REDIS_URL, LiveServer, start_server
from tests.gateway.helpers import bearer, create_token, login, seed

CONFIGURATIONS = [("sqlite", False), ("postgres", False), ("postgres", True)]
IDS = ["sqlite", "postgres", "postgres+redis"]
VALID = re.compile(r'^kbai_token_verifications_total\{outcome="valid"\} (\S+)$', re.M)


def _wait_for_log(server: LiveServer, text: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while server.log.read_text(errors="replace").count(text) < count:
        assert time.monotonic() < deadline, f"the server never logged {text!r} {count} times"
        time.sleep(0.05)


@pytest.fixture
def workers(
    backend: str, with_redis: bool, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[LiveServer]:
    seed(database_url)
    # 200 refusals from one address: above the default failure limit, which is not under test here.
    env = {
        "KBAI_CACHE_MAX_AGE_SECONDS": "600",
        "KBAI_LAST_USED_FLUSH_SECONDS": "3600",
        "KBAI_AUTH_FAILURES_PER_MINUTE": "1000",
    }
    if with_redis:
        env |= {"KBAI_REDIS_URL": REDIS_URL, "KBAI_REDIS_PREFIX": request.getfixturevalue("redis_prefix")}
    server = start_server(database_url, tmp_path, args=("--workers", "2"), **env)
    try:
        _wait_for_log(server, "listening for cache invalidations", 2)  # both workers subscribed
        yield server
    finally:
        server.stop()


# No keep-alive: every request opens a connection of its own, which either worker may accept.
FRESH = httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def fresh(server: LiveServer, path: str, token: str) -> httpx.Response:
    return FRESH.get(server.url + path, headers=bearer(token))


def valid_counts(server: LiveServer) -> set[float]:
    """The per-worker count of valid verifications, as each worker's /metrics reports it."""
    seen: set[float] = set()
    for _ in range(40):
        found = VALID.search(FRESH.get(server.url + "/metrics").text)
        seen.add(float(found.group(1)) if found else 0.0)
    return seen


@pytest.mark.parametrize(("backend", "with_redis"), CONFIGURATIONS, ids=IDS)
def test_a_revocation_through_any_worker_is_honoured_by_every_worker_and_no_count_is_lost(
    workers: LiveServer, database_url: str
) -> None:
    server = workers
    with server.client() as session:  # one keep-alive connection: one worker
        csrf = login(session)
        doomed = create_token(session, csrf, "doomed", ["users.read"])
        kept = create_token(session, csrf, "kept", ["users.read"])
        served = {doomed.id: 0, kept.id: 0}
        for i in range(120):
            token = doomed if i % 2 else kept
            r = fresh(server, "/auth/check" if i % 3 else "/api/v1/me", token.plaintext)
            assert r.status_code == 200, r.text
            served[token.id] += 1
        counts = valid_counts(server)
        assert sum(served.values()) in {sum(counts), 2 * max(counts)} and 0 not in counts, (
            f"both workers must have served: per-worker counts {counts}"
        )

        r = session.post(f"/api/v1/tokens/{doomed.id}/revoke", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200
        revoked_at = time.monotonic()
        # The worker that made the change refuses the token on its very next request.
        assert session.get("/auth/check", headers=bearer(doomed.plaintext)).status_code == 401

    time.sleep(max(0.0, 1.0 - (time.monotonic() - revoked_at)))
    refused = [fresh(server, "/auth/check" if i % 2 else "/api/v1/me", doomed.plaintext) for i in range(200)]
    assert [r.status_code for r in refused] == [401] * 200
    assert all("revoked" in r.headers["www-authenticate"] for r in refused)
    for _ in range(10):
        assert fresh(server, "/auth/check", kept.plaintext).status_code == 200
        served[kept.id] += 1

    assert server.stop() == 0  # graceful: SIGTERM to the parent, which stops both workers
    db = Database(database_url)
    try:
        with db.read() as s:
            hourly = dict(
                s.execute(
                    select(TokenUsageHour.token_id, func.sum(TokenUsageHour.requests)).group_by(TokenUsageHour.token_id)
                ).all()
            )
            last_used = dict(s.execute(select(Token.id, Token.last_used_at)).all())
    finally:
        db.dispose()
    assert {t: int(n) for t, n in hourly.items()} == served
    assert last_used[doomed.id] is not None and last_used[kept.id] is not None

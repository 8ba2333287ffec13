"""PostgreSQL alone is a complete scale-out configuration (issue 16): two `kbai serve` instances on one
PostgreSQL, no Redis, push changes to each other with LISTEN/NOTIFY.

The cache max age is raised to 10 minutes, so only a notification can explain instance B noticing a
change made on A within a second. Killing B's listening connection (`pg_terminate_backend`) makes B
stop trusting its cache until it listens again; `kbai_invalidation_channel_up` in B's /metrics shows when.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from kbai.cache.bus import PG_APPLICATION_NAME
from tests.conftest import LiveServer, start_server
from tests.gateway.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, bearer, create_token, login, seed

LIMIT = 5
BAD = "kbai_pk_" + "0" * 64
CHANNEL_UP = re.compile(r"^kbai_invalidation_channel_up (\S+)$", re.M)


def _within(seconds: float, check: Callable[[], bool]) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not seen within {seconds} s"
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def pair(database_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    seed(database_url)
    env = {"KBAI_CACHE_MAX_AGE_SECONDS": "600", "KBAI_AUTH_FAILURES_PER_MINUTE": str(LIMIT)}
    a = start_server(database_url, tmp_path, **env)
    try:
        b = start_server(database_url, tmp_path, **env)
    except Exception:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


def channel_up(server: LiveServer) -> bool:
    found = CHANNEL_UP.search(httpx.get(server.url + "/metrics", timeout=10).text)
    return found is not None and float(found.group(1)) == 1.0


@pytest.mark.parametrize("backend", ["postgres"])
def test_revocation_and_permission_removal_on_a_reach_b_within_one_second(pair: tuple[LiveServer, LiveServer]) -> None:
    a, b = pair
    assert channel_up(a) and channel_up(b)
    with a.client() as dev, a.client() as admin, b.client() as on_b:
        csrf = login(dev)
        doomed = create_token(dev, csrf, "doomed", ["users.read"])
        narrowed = create_token(dev, csrf, "narrowed", ["users.read", "roles.read"])
        for _ in range(3):  # B caches both verdicts, good for ten minutes
            assert on_b.get("/auth/check", headers=bearer(doomed.plaintext)).status_code == 200
            assert (
                on_b.get("/auth/check", params={"scope": "roles.read"}, headers=bearer(narrowed.plaintext)).status_code
                == 200
            )
        assert dev.post(f"/api/v1/tokens/{doomed.id}/revoke", headers={"X-CSRF-Token": csrf}).status_code == 200
        _within(1.0, lambda: on_b.get("/auth/check", headers=bearer(doomed.plaintext)).status_code == 401)

        admin_csrf = login(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
        role = next(r for r in admin.get("/api/v1/roles").json()["roles"] if r["name"] == "Developers")
        r = admin.put(
            f"/api/v1/roles/{role['id']}",
            json={"permissions": ["developer.manage_tokens", "users.read"]},
            headers={"X-CSRF-Token": admin_csrf},
        )
        assert r.status_code == 200
        _within(
            1.0,
            lambda: (
                on_b.get("/auth/check", params={"scope": "roles.read"}, headers=bearer(narrowed.plaintext)).status_code
                == 403
            ),
        )
        assert on_b.get("/api/v1/me", headers=bearer(narrowed.plaintext)).json()["scopes"] == ["users.read"]


def _terminate_listener(database_url: str, server: LiveServer) -> int:
    """pg_terminate_backend on the LISTEN connection of ``server`` (found by its application_name)."""
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    name = PG_APPLICATION_NAME.format(pid=server.process.pid)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchall()
    return len(rows)


@pytest.mark.parametrize("backend", ["postgres"])
def test_with_its_listener_killed_b_stops_trusting_its_cache_until_it_listens_again(
    pair: tuple[LiveServer, LiveServer], database_url: str
) -> None:
    a, b = pair
    with a.client() as dev, b.client() as on_b:
        csrf = login(dev)
        doomed = create_token(dev, csrf, "doomed", ["users.read"])
        kept = create_token(dev, csrf, "kept", ["users.read"])
        for token in (doomed, kept):
            assert on_b.get("/auth/check", headers=bearer(token.plaintext)).status_code == 200

        assert _terminate_listener(database_url, b) == 1
        _within(10.0, lambda: "lost the PostgreSQL invalidation channel" in b.log.read_text(errors="replace"))
        # A notification sent now reaches nobody on B's side: B must not serve its cached verdict.
        assert dev.post(f"/api/v1/tokens/{doomed.id}/revoke", headers={"X-CSRF-Token": csrf}).status_code == 200
        r = on_b.get("/auth/check", headers=bearer(doomed.plaintext))
        assert r.status_code == 401 and "revoked" in r.headers["www-authenticate"]
        assert on_b.get("/auth/check", headers=bearer(kept.plaintext)).status_code == 200

        _within(10.0, lambda: channel_up(b))  # B listens again (and started from an empty cache)
        assert on_b.get("/auth/check", headers=bearer(doomed.plaintext)).status_code == 401
        assert on_b.get("/auth/check", headers=bearer(kept.plaintext)).status_code == 200  # cached again
        assert dev.post(f"/api/v1/tokens/{kept.id}/revoke", headers={"X-CSRF-Token": csrf}).status_code == 200
        _within(1.0, lambda: on_b.get("/auth/check", headers=bearer(kept.plaintext)).status_code == 401)


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_block_on_a_reaches_b_over_notify(pair: tuple[LiveServer, LiveServer]) -> None:
    """Without Redis each instance counts its own failures; a block is announced at once."""
    a, b = pair
    ip = {"X-Forwarded-For": "198.51.100.30"}
    with a.client() as ca, b.client() as cb:
        for _ in range(LIMIT):
            assert ca.get("/api/v1/me", headers={**ip, **bearer(BAD)}).status_code == 401
        blocked_at = time.monotonic()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - blocked_at)))
        # B has counted no failure of this address: only the notification explains its refusal.
        r = cb.get("/api/v1/me", headers={**ip, **bearer(BAD)})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        r = cb.get("/auth/check", headers={**ip, **bearer(BAD)})
        assert r.status_code == 401 and 1 <= int(r.headers["retry-after"]) <= 60

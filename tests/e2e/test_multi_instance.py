"""Several `kbai serve` processes on one database (and Redis) behave as one.

Propagation tests run two real servers on PostgreSQL + Redis with a long cache max-age, so only
the Redis invalidation channel can explain instance B noticing a change made on instance A.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kbai.services import Services
from tests.conftest import REDIS_URL, LiveServer, build_world, start_server

PASSWORD = "dev-password-1"


def _login(url: str, email: str = "dev@acme.test", password: str = PASSWORD) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=url, timeout=30)
    r = client.post("/api/v1/session", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return client, r.json()["csrf_token"]


def _within(seconds: float, check) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not seen within {seconds} s"
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def pair(
    services: Services, database_url: str, tmp_path: Path, redis_prefix: str
) -> Iterator[tuple[LiveServer, LiveServer]]:
    build_world(services)
    env = {"KBAI_REDIS_URL": REDIS_URL, "KBAI_REDIS_PREFIX": redis_prefix, "KBAI_CACHE_MAX_AGE_SECONDS": "600"}
    a = start_server(database_url, tmp_path, **env)
    try:
        b = start_server(database_url, tmp_path, **env)
    except Exception:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


@pytest.mark.parametrize("backend", ["postgres"])
def test_revoke_on_a_is_refused_by_b_within_one_second(pair: tuple[LiveServer, LiveServer]) -> None:
    a, b = pair
    client, csrf = _login(a.url)
    made = client.post(
        "/api/v1/tokens", json={"name": "zapier", "scopes": ["users.read"]}, headers={"X-CSRF-Token": csrf}
    ).json()
    auth = {"Authorization": f"Bearer {made['token']}"}
    with httpx.Client(base_url=b.url, timeout=10) as on_b:
        for _ in range(3):  # warm B's cache
            assert on_b.get("/auth/check", headers=auth).status_code == 200
        r = client.post(f"/api/v1/tokens/{made['id']}/revoke", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200
        _within(1.0, lambda: on_b.get("/auth/check", headers=auth).status_code == 401)
        r = on_b.get("/api/v1/me", headers=auth)
        assert r.status_code == 401 and "revoked" in r.headers["www-authenticate"]
    client.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_pause_on_a_is_refused_by_b_within_one_second_and_resume_brings_it_back(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    client, csrf = _login(a.url)
    made = client.post(
        "/api/v1/tokens", json={"name": "cron", "scopes": ["users.read"]}, headers={"X-CSRF-Token": csrf}
    ).json()
    auth = {"Authorization": f"Bearer {made['token']}"}
    with httpx.Client(base_url=b.url, timeout=10) as on_b:
        for _ in range(3):  # warm B's cache
            assert on_b.get("/auth/check", headers=auth).status_code == 200
        r = client.post(f"/api/v1/tokens/{made['id']}/pause", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["status"] == "paused", r.text
        _within(1.0, lambda: on_b.get("/auth/check", headers=auth).status_code == 401)
        r = on_b.get("/api/v1/me", headers=auth)
        assert r.status_code == 401 and "paused" in r.headers["www-authenticate"]
        r = client.post(f"/api/v1/tokens/{made['id']}/resume", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["status"] == "active", r.text
        _within(1.0, lambda: on_b.get("/auth/check", headers=auth).status_code == 200)
        # Paused again, then revoked: final. Resume is refused and B keeps refusing.
        assert client.post(f"/api/v1/tokens/{made['id']}/pause", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert (
            client.post(f"/api/v1/tokens/{made['id']}/revoke", headers={"X-CSRF-Token": csrf}).json()["status"]
            == "revoked"
        )
        r = client.post(f"/api/v1/tokens/{made['id']}/resume", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_resumable"
        _within(1.0, lambda: "revoked" in on_b.get("/api/v1/me", headers=auth).headers.get("www-authenticate", ""))
    client.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_permission_removed_on_a_is_lost_on_b_within_one_second(pair: tuple[LiveServer, LiveServer]) -> None:
    a, b = pair
    dev, csrf = _login(a.url)
    made = dev.post(
        "/api/v1/tokens", json={"name": "n8n", "scopes": ["users.read", "roles.read"]}, headers={"X-CSRF-Token": csrf}
    ).json()
    auth = {"Authorization": f"Bearer {made['token']}"}
    admin, admin_csrf = _login(a.url, "admin@acme.test", "admin-password-1")
    role = next(r for r in admin.get("/api/v1/roles").json()["roles"] if r["name"] == "Developers")
    with httpx.Client(base_url=b.url, timeout=10) as on_b:
        assert on_b.get("/auth/check", params={"scope": "roles.read"}, headers=auth).status_code == 200
        r = admin.put(
            f"/api/v1/roles/{role['id']}",
            json={"permissions": ["developer.manage_tokens", "users.read"]},
            headers={"X-CSRF-Token": admin_csrf},
        )
        assert r.status_code == 200
        _within(1.0, lambda: on_b.get("/auth/check", params={"scope": "roles.read"}, headers=auth).status_code == 403)
        assert on_b.get("/api/v1/me", headers=auth).json()["scopes"] == ["users.read"]
    dev.close()
    admin.close()


def test_fifty_parallel_creates_over_two_instances_make_exactly_one(
    services: Services, database_url: str, tmp_path: Path
) -> None:
    build_world(services)
    a = start_server(database_url, tmp_path)
    b = start_server(database_url, tmp_path)
    try:
        clients = []
        for url in (a.url, b.url):
            clients.append(_login(url))
        first, csrf = clients[0]
        for i in range(9):
            r = first.post(
                "/api/v1/tokens", json={"name": f"existing {i}", "scopes": []}, headers={"X-CSRF-Token": csrf}
            )
            assert r.status_code == 201

        def create(i: int) -> int:
            client, token_csrf = clients[i % 2]
            r = client.post(
                "/api/v1/tokens", json={"name": f"race {i}", "scopes": []}, headers={"X-CSRF-Token": token_csrf}
            )
            assert r.status_code in (201, 409), r.text
            if r.status_code == 409:
                assert r.json()["error"]["code"] == "token_limit_reached"
            return r.status_code

        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(create, range(50)))
        assert statuses.count(201) == 1 and statuses.count(409) == 49
        listed = first.get("/api/v1/tokens").json()["tokens"]
        assert sum(1 for t in listed if t["status"] == "active") == 10
        for client, _ in clients:
            client.close()
    finally:
        a.stop()
        b.stop()

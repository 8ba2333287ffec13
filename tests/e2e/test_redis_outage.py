"""Redis is an optimisation, not a dependency: when it is unreachable (never there, or killed mid-run)
every `kbai serve` keeps answering logins, creates, token checks and revocations without a 5xx, failed
authentications are still rate limited (per instance, in memory), and a revocation made on one instance
is honoured on another at once (the cache is bypassed while the invalidation channel is down).

Uses a private `redis-server` on a free port so it can be SIGKILLed without touching the shared one.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import LiveServer, free_port, missing_service, start_server
from tests.gateway.helpers import bearer, create_token, login, seed

LIMIT = 5
BAD = "kbai_pk_" + "0" * 64


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing_service("the redis-server program")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.RedisError:
                time.sleep(0.1)
        else:
            pytest.fail("the private redis-server did not start")
        yield url, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _wait_for_log(server: LiveServer, text: str) -> None:
    """Wait for an event the server logs (bounded only so that a bug cannot hang the run)."""
    deadline = time.monotonic() + 60
    while text not in server.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"the server never logged {text!r}"
        time.sleep(0.05)


def _works_without_redis(server: LiveServer, good_token: str) -> None:
    """Login, create, check and refuse tokens on ``server``: every answer the normal one, never a 5xx."""
    with server.client() as c:
        csrf = login(c)
        made = create_token(c, csrf, f"during outage {server.url[-5:]}", ["users.read"])
        assert c.get("/api/v1/me", headers=bearer(made.plaintext)).status_code == 200
        assert c.get("/api/v1/me", headers=bearer(good_token)).status_code == 200
        assert c.get("/auth/check", headers=bearer(good_token), params={"scope": "users.read"}).status_code == 200
        r = c.get("/api/v1/me", headers=bearer(BAD))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
        r = c.post(f"/api/v1/tokens/{made.id}/revoke", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["status"] == "revoked"
        assert c.get("/api/v1/me", headers=bearer(made.plaintext)).status_code == 401
        assert c.get("/healthz").status_code == 200


def _still_rate_limited(server: LiveServer, good_token: str, client_ip: str) -> None:
    ip = {"X-Forwarded-For": client_ip}  # as told by a trusted proxy (127.0.0.1): a client of its own
    with server.client() as c:
        for _ in range(LIMIT):
            assert c.get("/api/v1/me", headers={**ip, **bearer(BAD)}).status_code == 401
        r = c.get("/api/v1/me", headers={**ip, **bearer(BAD)})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        # A token that verifies is always served, even from a blocked address (SPEC).
        assert c.get("/api/v1/me", headers={**ip, **bearer(good_token)}).status_code == 200


def _no_errors_logged(*servers: LiveServer) -> None:
    for server in servers:
        log = server.log.read_text(errors="replace")
        assert '"level": "ERROR"' not in log and "Traceback" not in log, f"{server.url} logged an error"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_redis_killed_mid_run(
    database_url: str, tmp_path: Path, private_redis: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, redis_proc = private_redis
    seed(database_url)
    env = {
        "KBAI_REDIS_URL": url,
        "KBAI_REDIS_PREFIX": "outage",
        "KBAI_AUTH_FAILURES_PER_MINUTE": str(LIMIT),
        "KBAI_CACHE_MAX_AGE_SECONDS": "3600",
    }
    a = start_server(database_url, tmp_path, **env)
    b = start_server(database_url, tmp_path, **env)
    try:
        with a.client() as c:
            csrf = login(c)
            doomed = create_token(c, csrf, "doomed", ["users.read"])
            kept = create_token(c, csrf, "kept", ["users.read"])
        with b.client() as c:  # B caches both verdicts (good for an hour, were Redis still there)
            for token in (doomed, kept):
                assert c.get("/api/v1/me", headers=bearer(token.plaintext)).status_code == 200

        redis_proc.send_signal(signal.SIGKILL)
        redis_proc.wait()
        _wait_for_log(b, "lost the Redis invalidation channel")

        with a.client() as c:
            csrf = login(c)
            assert c.post(f"/api/v1/tokens/{doomed.id}/revoke", headers={"X-CSRF-Token": csrf}).status_code == 200
        with b.client() as c:  # no message could reach B, yet it refuses the revoked token at once
            r = c.get("/api/v1/me", headers=bearer(doomed.plaintext))
            assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        for server, client_ip in ((a, "198.51.100.1"), (b, "198.51.100.2")):
            _works_without_redis(server, kept.plaintext)
            _still_rate_limited(server, kept.plaintext, client_ip)
    finally:
        a.stop()
        b.stop()
    _no_errors_logged(a, b)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_redis_never_reachable(database_url: str, tmp_path: Path) -> None:
    seed(database_url)
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = start_server(database_url, tmp_path, KBAI_REDIS_URL=nobody, KBAI_AUTH_FAILURES_PER_MINUTE=str(LIMIT))
    try:
        with server.client() as c:
            kept = create_token(c, login(c), "kept", ["users.read"])
        _works_without_redis(server, kept.plaintext)
        _still_rate_limited(server, kept.plaintext, "198.51.100.3")
        with server.client() as c:  # and failed logins too
            ip = {"X-Forwarded-For": "198.51.100.250"}
            limit = 10  # KBAI_LOGIN_FAILURES_PER_MINUTE's default
            for _ in range(limit):
                r = c.post(
                    "/api/v1/session", json={"email": "dev@acme.test", "password": "wrong-password-1"}, headers=ip
                )
                assert r.status_code == 401
            r = c.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"}, headers=ip)
            assert r.status_code == 429
    except httpx.HTTPError as exc:
        pytest.fail(f"the server dropped a connection: {exc}")
    finally:
        server.stop()
    _no_errors_logged(server)

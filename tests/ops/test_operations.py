"""Operations: /livez (the process, no I/O) and /readyz (database, migrations at head, invalidation
bus) beside /healthz; process, platform and GC series on /metrics; the request id on every log line
logged while serving a request; logs on stderr, as docs/security.md says."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, KBAI_BIN, REDIS_URL, _pg_admin, _pg_url, build_world, free_port, start_server
from tests.e2e.test_database_outage import _kill_connections

ROOT = Path(__file__).resolve().parents[2]


def _app(database_url: str, **settings: object) -> Iterator[tuple[TestClient, Services]]:
    svc = Services.build(
        Settings(database_url=database_url, **FAST_ARGON2).model_copy(update=settings), clock=FrozenClock()
    )
    with TestClient(create_app(svc)) as client:  # the lifespan starts the invalidation bus
        yield client, svc
    svc.close()


def test_livez_needs_nothing_and_readyz_says_the_database_is_gone(own_pg_database: str, tmp_path: Path) -> None:
    name = own_pg_database
    server = start_server(_pg_url(name), tmp_path)
    try:
        with server.client() as client:
            assert client.get("/livez").json()["status"] == "alive"
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {
                "status": "ready",
                "reasons": [],
                "checks": {"database": "ok", "migrations": "ok", "invalidation_bus": "connected"},
            }

            _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            _kill_connections(name)
            for _ in range(3):  # the process is alive and says so, whatever the database does
                live = client.get("/livez")
                assert live.status_code == 200 and live.json()["status"] == "alive"
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == "unreachable"
            assert ready.json()["reasons"] == ["the database cannot be reached"]
            assert client.get("/healthz").status_code == 503

            _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            assert client.get("/readyz").status_code == 200, "ready again once the database is back"
    finally:
        server.stop()


def test_readyz_is_503_until_migrations_are_at_head(database_url: str) -> None:
    for client, svc in _app(database_url):
        with svc.db.write() as s:
            head = s.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            s.execute(text("UPDATE alembic_version SET version_num = '0003'"))
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["migrations"] == "not_at_head"
        assert r.json()["reasons"] == [
            f"the database schema is at revision 0003, this code's newest is {head}: run `kbai db upgrade`"
        ]
        assert client.get("/livez").status_code == 200
        with svc.db.write() as s:
            s.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
        assert client.get("/readyz").json()["checks"]["migrations"] == "ok"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_readyz_reports_the_invalidation_bus(database_url: str, redis_prefix: str) -> None:
    for client, _svc in _app(database_url, redis_url=REDIS_URL, redis_prefix=redis_prefix):
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"]["invalidation_bus"] == "connected"
    for client, _svc in _app(database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0"):
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["invalidation_bus"] == "disconnected"
        assert "KBAI_REDIS_URL" in r.json()["reasons"][0]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_metrics_have_process_python_and_gc_series(database_url: str) -> None:
    for client, _svc in _app(database_url):
        assert client.get("/livez").status_code == 200
        names = {
            line.split("{")[0].split(" ")[0]
            for line in client.get("/metrics").text.splitlines()
            if line and not line.startswith("#")
        }
        assert {
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
            "python_info",
            "python_gc_collections_total",
            "kbai_http_request_duration_seconds_count",
        } <= names


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_log_line_of_a_request_carries_its_request_id(services: Services, tmp_path: Path) -> None:
    world = build_world(services)
    view, token = services.tokens.create(world.dev, "logged", ["users.read"])
    # A Redis nobody listens on: revoking publishes an invalidation, which fails and logs a warning
    # from inside the request (in the thread pool, where the route runs).
    server = start_server(services.settings.database_url, tmp_path, KBAI_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        with server.client() as client:
            r = client.post(
                f"/api/v1/tokens/{view.id}/revoke",
                headers={"Authorization": f"Bearer {token}", "X-Request-Id": "ops-revoke-1"},
            )
            assert r.status_code == 200 and r.headers["x-request-id"] == "ops-revoke-1"
            assert client.get("/livez", headers={"X-Request-Id": "ops-livez-2"}).status_code == 200
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    during = [e for e in lines if "could not publish a cache invalidation" in e["message"]]
    assert during, "the revocation logged its failed publish"
    assert {e.get("request_id") for e in during} == {"ops-revoke-1"}
    access = {e["path"]: e["request_id"] for e in lines if e["logger"] == "kbai.access"}
    assert access[f"/api/v1/tokens/{view.id}/revoke"] == "ops-revoke-1" and access["/livez"] == "ops-livez-2"
    others = {e["request_id"] for e in lines if "request_id" in e and e["logger"] != "kbai.access"}
    assert others == {"ops-revoke-1"}, "only the revocation logged more than its access line; no id leaks"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_logs_go_to_stderr_as_documented(database_url: str) -> None:
    env = {"KBAI_DATABASE_URL": database_url, "KBAI_LOG_LEVEL": "INFO", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([KBAI_BIN, "worker", "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(e["message"].startswith("worker pass") for e in logged)
    assert not [line for line in done.stdout.splitlines() if line.startswith("{")], "no log line on stdout"
    security = (ROOT / "docs" / "security.md").read_text()
    assert "JSON lines to stderr" in security and "JSON lines to stdout" not in security

"""Cheap observability (issue 16): every request is measured; successful token reads (/auth/check
200s, GET/HEAD API calls with a Bearer token) are counted but logged line by line only with
KBAI_ACCESS_LOG_TOKEN_READS; failed authentications, session requests and every write are logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, build_world

BAD = "kbai_pk_" + "0" * 64


def served(svc: Services, route: str, status: int, method: str = "GET") -> float:
    value = svc.metrics.registry.get_sample_value(
        "kbai_http_request_duration_seconds_count", {"method": method, "route": route, "status": str(status)}
    )
    return value or 0.0


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kbai.access"]


@pytest.fixture(params=[False, True], ids=["default", "KBAI_ACCESS_LOG_TOKEN_READS"])
def app(request: pytest.FixtureRequest, database_url: str) -> Iterator[tuple[Services, TestClient, str, bool]]:
    log_reads = bool(request.param)
    svc = Services.build(Settings(database_url=database_url, access_log_token_reads=log_reads, **FAST_ARGON2))
    world = build_world(svc)
    _, token = svc.tokens.create(world.dev, "logged", ["users.read"])
    try:
        with TestClient(create_app(svc, start_background=False)) as client:
            yield svc, client, token, log_reads
    finally:
        svc.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_successful_token_reads_are_counted_and_logged_only_when_asked(
    app: tuple[Services, TestClient, str, bool], caplog: pytest.LogCaptureFixture
) -> None:
    svc, client, token, log_reads = app
    auth = {"Authorization": f"Bearer {token}"}
    caplog.set_level(logging.INFO, logger="kbai.access")
    for _ in range(3):
        assert client.get("/auth/check", headers=auth).status_code == 200
        assert client.get("/auth/check/orders/7", headers=auth).status_code == 200
        assert client.get("/api/v1/me", headers=auth).status_code == 200
    assert served(svc, "/auth/check", 200) == 3
    assert served(svc, "/auth/check/{original_path:path}", 200) == 3
    assert served(svc, "/api/v1/me", 200) == 3
    lines = access_lines(caplog)
    assert len(lines) == (9 if log_reads else 0), lines
    assert svc.usage.pending() == 1  # and each use reaches Last used / the hourly counts


@pytest.mark.parametrize("backend", ["sqlite"])
def test_failures_sessions_and_writes_are_always_logged(
    app: tuple[Services, TestClient, str, bool], caplog: pytest.LogCaptureFixture
) -> None:
    svc, client, token, _ = app
    caplog.set_level(logging.INFO, logger="kbai.access")
    assert client.get("/auth/check", headers={"Authorization": f"Bearer {BAD}"}).status_code == 401
    assert client.get("/auth/check").status_code == 401
    assert (
        client.get(
            "/auth/check", headers={"Authorization": f"Bearer {token}"}, params={"scope": "audit.read"}
        ).status_code
        == 403
    )
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {BAD}"}).status_code == 401
    r = client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
    assert r.status_code == 200
    assert client.get("/api/v1/me").status_code == 200  # a session's read
    assert served(svc, "/auth/check", 401) == 2 and served(svc, "/auth/check", 403) == 1
    lines = access_lines(caplog)
    assert lines == [
        "GET /auth/check 401",
        "GET /auth/check 401",
        "GET /auth/check 403",
        "GET /api/v1/me 401",
        "POST /api/v1/session 200",
        "GET /api/v1/me 200",
    ]
    assert all("kbai_pk_0000000000" not in line for line in lines)

"""Secrets: a full token appears once, in the creation response, and nowhere else.

A real server runs with DEBUG logs; the test creates, uses, rotates and revokes tokens, sends them
where they don't belong (query strings, bad headers), then scans the server's whole log, the audit
log, /metrics and every later response for any token minted in the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from kbai.services import Services
from kbai.store.models import AuditEvent
from kbai.tokenformat import digest
from tests.conftest import LiveServer, build_world, start_server


@pytest.fixture
def debug_server(database_url: str, tmp_path: Path, services: Services) -> Iterator[LiveServer]:
    build_world(services)
    server = start_server(database_url, tmp_path, KBAI_LOG_LEVEL="DEBUG")
    yield server
    server.stop()


def test_no_token_in_logs_audit_metrics_or_later_responses(debug_server: LiveServer, services: Services) -> None:
    minted: list[str] = []
    later_bodies: list[str] = []
    with debug_server.client() as c:
        csrf = c.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"}).json()[
            "csrf_token"
        ]
        h = {"X-CSRF-Token": csrf}
        for name in ("Zapier production", "n8n nightly sync"):
            r = c.post(
                "/api/v1/tokens", json={"name": name, "scopes": ["users.read"], "expires_in_days": 30}, headers=h
            )
            assert r.status_code == 201
            minted.append(r.json()["token"])
        r = c.post("/api/v1/tokens/1/rotate", json={"grace_period_seconds": 0}, headers=h)
        assert r.status_code == 201
        minted.append(r.json()["token"])
        a, b, rotated = minted
        for token in (a, b, rotated):
            later_bodies.append(c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).text)
            later_bodies.append(c.get(f"/api/v1/me?access_token={token}").text)
            later_bodies.append(c.get(f"/nowhere/{token}").text)
            later_bodies.append(c.get("/auth/check", headers={"Authorization": f"Bearer {token.upper()}"}).text)
            later_bodies.append(c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}x"}).text)
            later_bodies.append(c.post("/api/v1/tokens", json={"name": token, "scopes": [token]}, headers=h).text)
        later_bodies.append(c.post(f"/api/v1/tokens/{2}/revoke", headers=h).text)
        later_bodies.append(c.get("/api/v1/tokens").text)
        later_bodies.append(c.get("/api/v1/me", headers={"Authorization": f"Bearer {b}"}).text)
        metrics = c.get("/metrics").text
    debug_server.stop()
    log = debug_server.log.read_text(errors="replace")
    assert "GET /api/v1/me" in log, "the server log should have request lines to scan"
    with services.db.read() as s:
        audit_rows = [repr((e.actor, e.action, e.target_id, e.details)) for e in s.scalars(select(AuditEvent))]
    assert any("token.create" in row for row in audit_rows)
    haystacks = {
        "server log": log,
        "metrics": metrics,
        "audit": "\n".join(audit_rows),
        "later responses": "\n".join(later_bodies),
    }
    for token in minted:
        secret = token[len("kbai_pk_") :]
        for where, text in haystacks.items():
            # A bare boolean, so that a failing run reports the digest and never prints the secret.
            leaked = secret in text.lower()
            assert not leaked, f"token with digest {digest(token)[:12]} found in {where}"

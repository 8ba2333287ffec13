"""GET /api/v1/audit filters and the CSV / JSON export."""

from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient

from kbai.clock import FrozenClock
from tests.conftest import World
from tests.web.conftest import login


def _admin(client: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": login(client, "admin@acme.test", "admin-password-1")}


def test_filters(world: World, app_client: TestClient, clock: FrozenClock) -> None:
    h = _admin(app_client)
    r = app_client.post("/api/v1/tokens", json={"name": '=HYPERLINK("x")', "scopes": []}, headers=h)
    token_id = r.json()["id"]
    clock.advance(hours=1)
    app_client.post(f"/api/v1/tokens/{token_id}/revoke", headers=h)
    admin_id = app_client.get("/api/v1/me").json()["user"]["id"]

    def actions(**params: object) -> list[str]:
        r = app_client.get("/api/v1/audit", params=params)
        assert r.status_code == 200, r.text
        return [e["action"] for e in r.json()["events"]]

    assert actions(target_type="token", target_id=str(token_id)) == ["token.revoke", "token.create"]
    assert actions(action="token.revoke") == ["token.revoke"]
    assert set(actions(actor_user_id=admin_id)) == {"session.login", "token.create", "token.revoke"}
    since = clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert actions(since=since) == ["token.revoke"]
    assert "token.revoke" not in actions(until=since)
    bad = app_client.get("/api/v1/audit", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since" in bad.json()["error"]["message"]


def test_csv_and_json_export(world: World, app_client: TestClient) -> None:
    h = _admin(app_client)
    app_client.post("/api/v1/tokens", json={"name": "=cmd|' /C calc'!A0", "scopes": []}, headers=h)
    r = app_client.get("/api/v1/audit/export", params={"format": "csv", "action": "token.create"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["id", "at", "actor", "action", "target_type", "target_id", "ip", "details"]
    assert len(rows) == 2 and rows[1][3] == "token.create"
    assert rows[1][2] == "user:admin@acme.test"
    # the token name sits in the JSON details cell, which never starts with a formula character
    assert rows[1][7].startswith("{") and "=cmd" in rows[1][7]
    j = app_client.get("/api/v1/audit/export", params={"format": "json"})
    assert j.status_code == 200 and j.headers["content-type"].startswith("application/json")
    events = j.json()["events"]
    assert [e["action"] for e in events][:2] == ["token.create", "session.login"]
    assert app_client.get("/api/v1/audit/export", params={"format": "xml"}).status_code == 422


def test_export_needs_audit_read(world: World, app_client: TestClient) -> None:
    login(app_client, "dev@acme.test", "dev-password-1")
    r = app_client.get("/api/v1/audit/export")
    assert r.status_code == 403 and "audit.read" in r.json()["error"]["message"]

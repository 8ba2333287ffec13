"""The admin token inventory: reviewers see every token of their tenant (filters, cursor pages, CSV) and
revoke any of them, the owner being told in-app and by email; other tenants' tokens are 404."""

from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.clock import FrozenClock
from kbai.store.models import AuditEvent, Notification
from kbai.tokens.verify import Outcome
from tests.conftest import World, build_world
from tests.lifecycle.conftest import Mailbox, login, subject
from tests.tokens.helpers import assert_no_secret


def test_reviewers_list_filter_page_and_export(world: World, clock: FrozenClock, client: TestClient) -> None:
    svc = world.services
    stale, _ = svc.tokens.create(world.dev, '=HYPERLINK("http://evil.test")', ["users.read"])
    clock.advance(days=91)
    soon, soon_token = svc.tokens.create(world.dev, "expires soon", ["users.read"], expires_in_days=7)
    revoked, _ = svc.tokens.create(world.dev, "revoked", ["users.read"])
    svc.tokens.revoke(world.dev, revoked.id)
    mine, _ = svc.tokens.create(world.admin, "admin's", ["audit.read"], expires_in_days=30)
    other = build_world(svc, "Globex", "globex.test")
    theirs, _ = svc.tokens.create(other.dev, "globex", ["users.read"])

    login(client, "dev@acme.test", "dev-password-1")
    r = client.get("/api/v1/admin/tokens")
    assert r.status_code == 403 and "developer.review_tokens" in r.json()["error"]["message"]
    login(client, "admin@acme.test", "admin-password-1")

    def ids(**params: object) -> list[int]:
        r = client.get("/api/v1/admin/tokens", params=params)
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["tokens"]]

    assert ids() == [mine.id, revoked.id, soon.id, stale.id]  # newest first, never another tenant's
    assert theirs.id not in ids(owner=str(other.dev.user_id))
    assert ids(owner="DEV@acme.test") == ids(owner=str(world.dev.user_id)) == [revoked.id, soon.id, stale.id]
    assert ids(status="revoked") == [revoked.id]
    assert ids(status="active") == [mine.id, soon.id, stale.id]
    assert ids(stale="true") == [stale.id]
    assert ids(expiring_soon="true") == [soon.id]
    assert ids(expiring_soon="true", owner="admin@acme.test") == []
    r = client.get("/api/v1/admin/tokens")
    row = r.json()["tokens"][-1]
    assert row["owner"] == {"id": world.dev.user_id, "email": "dev@acme.test"}
    assert row["hygiene"] == ["never_used", "unused_90_days", "older_than_90_days"]
    first = client.get("/api/v1/admin/tokens", params={"limit": 3}).json()
    assert [t["id"] for t in first["tokens"]] == [mine.id, revoked.id, soon.id] and first["next_cursor"]
    rest = client.get("/api/v1/admin/tokens", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [t["id"] for t in rest["tokens"]] == [stale.id] and rest["next_cursor"] is None
    for bad in ({"status": "sleeping"}, {"cursor": "x1"}, {"limit": 0}, {"stale": "maybe"}, {"owner": "a" * 400}):
        r = client.get("/api/v1/admin/tokens", params=bad)
        assert r.status_code == 422 and set(r.json()["error"]) == {"code", "message"}, bad

    export = client.get("/api/v1/admin/tokens/export", params={"owner": "dev@acme.test"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [int(r["id"]) for r in rows] == [revoked.id, soon.id, stale.id]
    assert rows[-1]["name"].startswith("'=")  # no spreadsheet formula
    assert rows[-1]["hygiene"] == "never_used unused_90_days older_than_90_days"
    assert rows[1]["status"] == "active" and rows[0]["status"] == "revoked"
    assert_no_secret(soon_token[12:], export.text, "CSV export")


def test_admin_revokes_another_users_token_and_the_owner_is_told(
    world: World, client: TestClient, mailbox: Mailbox
) -> None:
    svc = world.services
    view, token = svc.tokens.create(world.dev, "forgotten script", ["users.read"])
    other = build_world(svc, "Globex", "globex.test")
    theirs, their_token = svc.tokens.create(other.dev, "globex", ["users.read"])
    csrf = login(client, "admin@acme.test", "admin-password-1")
    r = client.post(f"/api/v1/admin/tokens/{theirs.id}/revoke", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert svc.tokens.verify(their_token).outcome is Outcome.VALID
    r = client.post(f"/api/v1/admin/tokens/{view.id}/revoke", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "revoked" and r.json()["owner"]["email"] == "dev@acme.test"
    assert svc.tokens.verify(token).outcome is Outcome.REVOKED
    again = client.post(f"/api/v1/admin/tokens/{view.id}/revoke", headers={"X-CSRF-Token": csrf})
    assert again.status_code == 200 and again.json() == r.json()  # idempotent
    with svc.db.read() as s:
        notes = list(s.scalars(select(Notification).where(Notification.user_id == world.dev.user_id)))
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "token.revoke")))
    (note,) = notes  # once, although revoked twice
    assert note.kind == "token.revoked_by_admin" and "admin@acme.test" in note.title
    assert note.details["token_id"] == view.id
    (event,) = events
    assert event.actor == "user:admin@acme.test" and event.target_id == str(view.id)
    assert event.details["owner"] == "dev@acme.test" and "reviewer" in event.details["reason"]
    (mail,) = mailbox.to("dev@acme.test")
    assert subject(mail) == note.title and "401" in mail.get_content()
    # The owner sees it in their notifications.
    dev_csrf = login(client, "dev@acme.test", "dev-password-1")
    listed = client.get("/api/v1/notifications").json()
    assert [n["kind"] for n in listed["notifications"]] == ["token.revoked_by_admin"]
    # A member without developer.review_tokens may not use it.
    r = client.post(f"/api/v1/admin/tokens/{view.id}/revoke", headers={"X-CSRF-Token": dev_csrf})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_a_token_with_the_review_scope_may_use_the_inventory(
    world: World, client: TestClient, clock: FrozenClock
) -> None:
    svc = world.services
    _, reviewer = svc.tokens.create(world.admin, "inventory bot", ["developer.review_tokens"])
    _, plain = svc.tokens.create(world.admin, "plain", ["users.read"])
    dev_token, _ = svc.tokens.create(world.dev, "dev's", ["users.read"], expires_in_days=3)
    r = client.get(
        "/api/v1/admin/tokens", params={"expiring_soon": "true"}, headers={"Authorization": f"Bearer {reviewer}"}
    )
    assert r.status_code == 200 and [t["id"] for t in r.json()["tokens"]] == [dev_token.id]
    r = client.get("/api/v1/admin/tokens", headers={"Authorization": f"Bearer {plain}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    clock.advance(days=3)
    r = client.get(
        "/api/v1/admin/tokens", params={"status": "expired"}, headers={"Authorization": f"Bearer {reviewer}"}
    )
    assert [t["id"] for t in r.json()["tokens"]] == [dev_token.id]

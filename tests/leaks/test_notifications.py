"""In-app notifications: GET /api/v1/notifications for the session user, mark read, the sender hook."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.testclient import TestClient

from kbai.delivery.notifications import NotificationView
from kbai.lifecycle.leaks import LeakReport
from kbai.store.audit import Actor
from tests.conftest import World

ACTOR = Actor(kind="service", email="test reporter")


def leak(world: World, count: int) -> list[str]:
    tokens = []
    for i in range(count):
        tokens.append(world.services.tokens.create(world.dev, f"token {i}", ["users.read"])[1])
    world.services.leaks.report(
        ACTOR, "test reporter", [LeakReport(t, url=f"https://example.test/{i}") for i, t in enumerate(tokens)]
    )
    return tokens


def login(client: TestClient, email: str, password: str) -> str:
    r = client.post("/api/v1/session", json={"email": email, "password": password})
    assert r.status_code == 200
    return str(r.json()["csrf_token"])


def test_list_page_and_mark_read(world: World, client: TestClient) -> None:
    leak(world, 3)
    csrf = login(client, "dev@acme.test", "dev-password-1")
    r = client.get("/api/v1/notifications", params={"limit": 2})
    assert r.status_code == 200
    page = r.json()
    assert page["unread"] == 3 and len(page["notifications"]) == 2 and page["next_cursor"]
    urls = [n["details"]["locations"][0]["url"] for n in page["notifications"]]
    assert urls == ["https://example.test/2", "https://example.test/1"]  # newest first
    rest = client.get("/api/v1/notifications", params={"cursor": page["next_cursor"]}).json()
    assert len(rest["notifications"]) == 1 and rest["next_cursor"] is None
    first = page["notifications"][0]
    r = client.post(f"/api/v1/notifications/{first['id']}/read", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["read_at"] is not None
    unread = client.get("/api/v1/notifications", params={"unread_only": "true"}).json()
    assert unread["unread"] == 2 and first["id"] not in {n["id"] for n in unread["notifications"]}
    # Someone else's notification is not found; so is a bad cursor refused clearly.
    admin_note = world.services.notifications.list(world.admin.user_id)[0]  # type: ignore[arg-type]
    r = client.post(f"/api/v1/notifications/{admin_note.id}/read", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for cursor in ("abc", "²", "99999999999", "-1"):
        assert client.get("/api/v1/notifications", params={"cursor": cursor}).status_code == 422
    assert client.post("/api/v1/notifications/4294967296/read", headers={"X-CSRF-Token": csrf}).status_code == 422


def test_needs_a_session(world: World, client: TestClient) -> None:
    assert client.get("/api/v1/notifications").status_code == 401
    csrf = login(client, "dev@acme.test", "dev-password-1")
    _view, token = world.services.tokens.create(world.dev, "api", ["users.read"])
    client.cookies.clear()
    r = client.get("/api/v1/notifications", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "session_required"
    assert csrf


def test_senders_get_new_notifications_after_commit_and_cannot_break_it(world: World) -> None:
    svc = world.services
    seen: list[NotificationView] = []

    def email(views: Sequence[NotificationView]) -> None:
        seen.extend(views)

    def broken(_views: Sequence[NotificationView]) -> None:
        raise RuntimeError("smtp down")

    svc.notifications.senders.extend([broken, email])
    [token] = leak(world, 1)
    assert {(v.email, v.kind) for v in seen} == {("dev@acme.test", "token.leaked"), ("admin@acme.test", "token.leaked")}
    assert all(v.id for v in seen)  # committed rows
    assert svc.tokens.verify(token).outcome.value == "revoked"

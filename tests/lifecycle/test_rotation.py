"""Rotation: both tokens linked (JSON and audit), the grace period ends to the second, and only an
active token can be rotated. Both backends, FrozenClock, no sleeping."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.clock import FrozenClock, iso
from kbai.store.models import AuditEvent
from kbai.tokens.verify import Outcome
from tests.conftest import World
from tests.lifecycle.conftest import login
from tests.tokens.helpers import raises_code


def test_both_tokens_are_linked_in_json_and_audit(world: World, client: TestClient) -> None:
    csrf = login(client, "dev@acme.test", "dev-password-1")
    headers = {"X-CSRF-Token": csrf}
    old = client.post(
        "/api/v1/tokens",
        headers=headers,
        json={"name": "n8n nightly sync", "scopes": ["users.read"], "expires_in_days": 90},
    ).json()
    assert old["rotated_from_id"] is None and old["rotated_to_id"] is None
    r = client.post(f"/api/v1/tokens/{old['id']}/rotate", headers=headers, json={"grace_period_seconds": 3600})
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["rotated_from_id"] == old["id"] and new["rotated_to_id"] is None
    assert new["rotated_from"]["id"] == old["id"] and new["rotated_from"]["rotated_to_id"] == new["id"]
    assert new["rotated_from"]["status"] == "active"  # still in its grace period
    listed = {t["id"]: t for t in client.get("/api/v1/tokens").json()["tokens"]}
    assert listed[old["id"]]["rotated_to_id"] == new["id"]
    assert listed[new["id"]]["rotated_from_id"] == old["id"]
    assert client.get(f"/api/v1/tokens/{old['id']}").json()["rotated_to_id"] == new["id"]
    with world.services.db.read() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.rotate")).one()
    assert event.target_id == str(new["id"])
    assert event.details["from_id"] == old["id"] and event.details["to_id"] == new["id"]
    # The audit log redacts anything token-shaped, display prefixes included ("kbai_pk_1a2b…").
    assert event.details["from_prefix"].startswith(old["prefix"])
    assert event.details["to_prefix"].startswith(new["prefix"])
    assert event.details["old_stops_at"] == new["old_token_stops_at"]


def test_grace_period_ends_to_the_second(world: World, clock: FrozenClock) -> None:
    svc = world.services
    old_view, old_token = svc.tokens.create(world.dev, "Zapier production", ["users.read"], expires_in_days=30)
    clock.advance(days=10)
    new_view, new_token, old_after = svc.tokens.rotate(world.dev, old_view.id, 86400)
    stop = clock.now() + timedelta(seconds=86400)
    assert old_after.revoked_at == stop
    # Same lifetime as the old one, counted from the rotation.
    assert new_view.expires_at == clock.now() + timedelta(days=30)
    clock.set(stop - timedelta(seconds=1))
    assert svc.tokens.verify(old_token).outcome is Outcome.VALID
    clock.set(stop)
    assert svc.tokens.verify(old_token).outcome is Outcome.REVOKED
    assert svc.tokens.verify(new_token).outcome is Outcome.VALID
    assert svc.tokens.get(world.dev, old_view.id).status == "revoked"
    assert iso(svc.tokens.get(world.dev, old_view.id).revoked_at) == iso(stop)


def test_a_revoked_or_expired_token_cannot_be_rotated(world: World, clock: FrozenClock, client: TestClient) -> None:
    svc = world.services
    revoked, _ = svc.tokens.create(world.dev, "revoked one", ["users.read"])
    svc.tokens.revoke(world.dev, revoked.id)
    with raises_code("not_rotatable") as info:
        svc.tokens.rotate(world.dev, revoked.id)
    assert "revoked" in info.value.message
    expiring, _ = svc.tokens.create(world.dev, "expiring one", ["users.read"], expires_in_days=1)
    clock.advance(days=1)
    with raises_code("not_rotatable") as info:
        svc.tokens.rotate(world.dev, expiring.id)
    assert "expired" in info.value.message
    # A token in its grace period was rotated already: its successor is the one to rotate.
    csrf = login(client, "dev@acme.test", "dev-password-1")
    r = client.post(f"/api/v1/tokens/{expiring.id}/rotate", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_rotatable"
    for bad in (
        {"grace_period_seconds": 604801},
        {"grace_period_seconds": -1},
        {"grace_period_seconds": "3600"},
        {"expires_in_days": 0},
        {"expires_in_days": True},
    ):
        fresh, _ = svc.tokens.create(world.dev, f"fresh {bad}", ["users.read"])
        r = client.post(f"/api/v1/tokens/{fresh.id}/rotate", headers={"X-CSRF-Token": csrf}, json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert set(r.json()["error"]) == {"code", "message"}


def test_rotating_with_24_hours_of_overlap_at_the_limit(world: World, clock: FrozenClock, client: TestClient) -> None:
    """At 10 of 10 the API rotates with a grace period: the old token, in its grace period, stops counting."""
    svc = world.services
    made = [svc.tokens.create(world.dev, f"integration {i}", ["users.read"])[0] for i in range(10)]
    csrf = login(client, "dev@acme.test", "dev-password-1")
    r = client.post(
        f"/api/v1/tokens/{made[0].id}/rotate", headers={"X-CSRF-Token": csrf}, json={"grace_period_seconds": 86400}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["rotated_from"]["status"] == "active"
    assert body["old_token_stops_at"] == iso(clock.now() + timedelta(days=1))
    assert svc.tokens.allowance(world.dev.user_id) == (10, 10)
    # The default stays no overlap: the old one stops at once.
    r = client.post(f"/api/v1/tokens/{made[1].id}/rotate", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201 and r.json()["rotated_from"]["status"] == "revoked"

"""Hygiene flags in the token JSON, and the auto-revoke policy: tokens unused for N days are revoked by the
worker, audited as the system, and their owners told in-app and by email."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.clock import FrozenClock
from kbai.lifecycle.hygiene import NEVER_USED, OLDER_THAN_90_DAYS, UNUSED_90_DAYS, hygiene
from kbai.lifecycle.worker import Worker
from kbai.store.models import AuditEvent, Notification
from kbai.tokens.verify import Outcome
from tests.conftest import World
from tests.lifecycle.conftest import Mailbox, login


def test_flags_follow_creation_last_use_and_the_clock(world: World, clock: FrozenClock, client: TestClient) -> None:
    svc = world.services
    view, token = svc.tokens.create(world.dev, "cron job", ["users.read"])
    assert hygiene(view, clock.now()) == [NEVER_USED]
    clock.advance(days=90, seconds=-1)
    assert hygiene(svc.tokens.get(world.dev, view.id), clock.now()) == [NEVER_USED]
    clock.advance(seconds=1)
    assert hygiene(svc.tokens.get(world.dev, view.id), clock.now()) == [NEVER_USED, UNUSED_90_DAYS, OLDER_THAN_90_DAYS]
    svc.usage.record(view.id, clock.now())
    svc.usage.flush()
    assert hygiene(svc.tokens.get(world.dev, view.id), clock.now()) == [OLDER_THAN_90_DAYS]
    clock.advance(days=90)
    csrf = login(client, "dev@acme.test", "dev-password-1")
    (row,) = client.get("/api/v1/tokens").json()["tokens"]
    assert row["hygiene"] == [UNUSED_90_DAYS, OLDER_THAN_90_DAYS]
    rotated = client.post(f"/api/v1/tokens/{view.id}/rotate", headers={"X-CSRF-Token": csrf}).json()
    assert rotated["hygiene"] == [NEVER_USED]  # the new token starts fresh
    assert rotated["rotated_from"]["hygiene"] == []  # revoked tokens need no badge
    assert svc.tokens.verify(token).outcome is Outcome.REVOKED


def test_auto_revoke_after_n_days_unused(world: World, clock: FrozenClock, mailbox: Mailbox) -> None:
    svc = world.services
    worker = Worker(svc.reminders, svc.auto_revoke)
    never, never_token = svc.tokens.create(world.dev, "never used", ["users.read"])
    used, used_token = svc.tokens.create(world.dev, "used on day 10", ["users.read"])
    admins, _ = svc.tokens.create(world.admin, "admin's", ["users.read"])
    svc.policies.set(world.admin, world.tenant_id, auto_revoke_unused_days=30)
    clock.advance(days=10)
    svc.usage.record(used.id, clock.now())
    svc.usage.record(admins.id, clock.now())
    svc.usage.flush()
    clock.advance(days=20, seconds=-1)  # 30 days minus a second since the first two were created
    assert worker.run_once().auto_revoked == 0
    clock.advance(seconds=1)
    assert worker.run_once().auto_revoked == 1
    assert svc.tokens.verify(never_token).outcome is Outcome.REVOKED
    assert svc.tokens.verify(used_token).outcome is Outcome.VALID
    assert worker.run_once().auto_revoked == 0  # once
    clock.advance(days=10)  # 30 days since day 10's use
    assert worker.run_once().auto_revoked == 2
    assert svc.tokens.verify(used_token).outcome is Outcome.REVOKED
    with svc.db.read() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "token.revoke").order_by(AuditEvent.id)))
        notes = list(
            s.scalars(select(Notification).where(Notification.kind == "token.auto_revoked").order_by(Notification.id))
        )
    assert [e.target_id for e in events] == [str(never.id), str(used.id), str(admins.id)]
    assert {e.actor for e in events} == {"system (auto-revoke policy)"}
    assert events[0].details["reason"] == "unused for 30 days (tenant policy)"
    assert [(n.user_id, n.details["token_id"]) for n in notes] == [
        (world.dev.user_id, never.id),
        (world.dev.user_id, used.id),
        (world.admin.user_id, admins.id),
    ]
    assert "never used" in notes[0].body and "30 days" in notes[0].title
    assert mailbox.subjects("dev@acme.test") == [n.title for n in notes[:2]]
    assert len(mailbox.to("admin@acme.test")) == 1
    # Turning the policy off stops it.
    svc.policies.set(world.admin, world.tenant_id, auto_revoke_unused_days=None)
    svc.tokens.create(world.dev, "new one", ["users.read"])
    clock.advance(days=365)
    assert worker.run_once().auto_revoked == 0

"""The outbox that every email and webhook event leaves through: a serving process sends after the request's
commit without making the request wait; a failing message is retried on its schedule and then given up on
(logged) and pruned; an event whose webhook was removed is dropped; and a worker killed in the middle of a
delivery leaves the event to be delivered again, with the same webhook-id, once its lease runs out (at least
once). Both backends."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from kbai.clock import FrozenClock, iso
from kbai.delivery.outbox import LEASE_MARGIN_SECONDS, RETRY_DELAYS
from kbai.delivery.webhooks import verify
from kbai.store.models import OutboxMessage
from tests.conftest import KBAI_BIN, OPERATOR, World, server_env
from tests.lifecycle.conftest import LOCAL_RECEIVERS, Mailbox, Trickler, WebhookReceiver

DEV = "dev@acme.test"


def _rows(world: World) -> list[OutboxMessage]:
    with world.services.db.read() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_a_serving_process_sends_after_the_commit_without_the_request_waiting(world: World, mailbox: Mailbox) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "forgotten script", ["users.read"])
    mailbox.delay = 2.0  # the mail server takes its time over each message
    svc.outbox.start()  # what `kbai serve` does (Services.start)
    try:
        svc.inventory.revoke(world.admin, view.id)
        assert mailbox.to(DEV) == []  # the revocation returned before the mail server had the message
        deadline = time.monotonic() + 60
        while not mailbox.to(DEV) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the background sender, not for a clock
    finally:
        svc.outbox.stop()
    (mail,) = mailbox.to(DEV)
    (row,) = _rows(world)
    assert row.sent_at is not None and mail["Message-ID"] == f"<{row.event_id}@acme.test>"


def test_a_failing_message_is_retried_on_schedule_then_given_up_and_pruned(
    world: World, clock: FrozenClock, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", ["users.read"])
    mailbox.refuse = True
    svc.inventory.revoke(world.admin, view.id)  # attempt 1, right after the commit
    for attempt, delay in enumerate(RETRY_DELAYS, start=2):
        clock.advance(seconds=delay - 1)
        assert svc.outbox.dispatch().failed == 0  # not yet
        clock.advance(seconds=1)
        assert svc.outbox.dispatch().failed == 1
        (row,) = _rows(world)
        assert row.attempts == attempt
    assert row.failed_at == clock.now() and "554" in (row.last_error or "")
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("kbai"))
    assert "outbox: gave up on email notification-1" in ours and DEV not in ours
    clock.advance(days=30)
    assert svc.outbox.dispatch().failed == 0  # never again
    assert mailbox.to(DEV) == []
    assert svc.outbox.prune() == 1 and _rows(world) == []


def test_an_event_whose_webhook_was_removed_is_dropped(
    world: World, clock: FrozenClock, webhook: WebhookReceiver
) -> None:
    svc = world.services
    svc.policies.set(world.admin, world.tenant_id, webhook_url=webhook.url)
    svc.tokens.create(world.dev, "n8n", ["users.read"], expires_in_days=8)
    clock.advance(days=1)
    webhook.status = 503
    svc.reminders.send_due()
    svc.policies.set(world.admin, world.tenant_id, webhook_url=None)
    clock.advance(seconds=RETRY_DELAYS[0])
    webhook.status = 200
    assert svc.outbox.dispatch().failed == 1
    (row,) = [r for r in _rows(world) if r.channel == "webhook"]
    assert row.failed_at is not None and row.last_error == "the tenant has no webhook any more"
    assert webhook.events == []


def test_a_worker_killed_mid_delivery_leaves_the_event_to_be_sent_again_with_the_same_id(
    world: World, clock: FrozenClock, database_url: str, trickler: Trickler, webhook: WebhookReceiver
) -> None:
    svc = world.services
    _policy, secret = svc.policies.set(OPERATOR, world.tenant_id, webhook_url=trickler.url)
    assert secret is not None
    view, _ = svc.tokens.create(world.dev, "Zapier", ["users.read"], expires_in_days=8)
    now = clock.now() + timedelta(days=1)
    env = server_env(database_url, KBAI_FAKE_NOW=iso(now) or "", KBAI_WEBHOOK_ALLOWED_NETWORKS=LOCAL_RECEIVERS)
    first = subprocess.Popen([KBAI_BIN, "worker", "--once"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert trickler.connected.wait(60), "the first worker never reached the receiver"
    finally:
        first.send_signal(signal.SIGKILL)  # dies in the middle of the delivery
        first.communicate(timeout=30)
    (row,) = [r for r in _rows(world) if r.channel == "webhook"]
    assert row.sent_at is None and row.attempts == 1 and row.locked_until is not None
    # The receiver moves (same secret); a second worker within the lease leaves the row alone ...
    svc.policies.set(OPERATOR, world.tenant_id, webhook_url=webhook.url)
    env["KBAI_FAKE_NOW"] = iso(now + timedelta(seconds=5)) or ""
    early = subprocess.run([KBAI_BIN, "worker", "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert early.returncode == 0, early.stderr[-2000:]
    assert webhook.events == []
    # ... and one after the lease has run out sends it again, as the same event.
    later = now + timedelta(seconds=svc.settings.outbound_deadline_seconds + LEASE_MARGIN_SECONDS + 1)
    env["KBAI_FAKE_NOW"] = iso(later) or ""
    done = subprocess.run([KBAI_BIN, "worker", "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "deliveries: 1" in done.stdout, done.stdout + done.stderr[-2000:]
    (event,) = webhook.events
    headers = httpx.Headers(event.headers)
    assert headers["webhook-id"] == row.event_id == f"reminder-{view.id}-expires_in_7_days"
    assert verify(secret, dict(headers), event.body, later)
    (row,) = [r for r in _rows(world) if r.channel == "webhook"]
    assert row.sent_at is not None and row.attempts == 2

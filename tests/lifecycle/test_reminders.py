"""Expiry reminders in-process: 7 days before, 1 day before and at expiry, each once, by email (a real SMTP
server) and in-app; none for revoked or rotated tokens; a failed send stays in the outbox, is retried after
its backoff and never doubled; webhook events verify with the standardwebhooks package's own verifier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook, WebhookVerificationError

from kbai.clock import FrozenClock
from kbai.delivery.outbox import RETRY_DELAYS
from kbai.delivery.webhooks import standard_secret, verify
from kbai.lifecycle.reminders import EXPIRED, EXPIRES_IN_1_DAY, EXPIRES_IN_7_DAYS, NOTICE, WEBHOOK
from kbai.store.models import Notification, OutboxMessage, TokenReminder
from tests.conftest import OPERATOR, World
from tests.lifecycle.conftest import Mailbox, WebhookReceiver

DEV = "dev@acme.test"


def _notices(world: World) -> list[Notification]:
    with world.services.db.read() as s:
        return list(
            s.scalars(
                select(Notification).where(Notification.kind == "token.expiry_reminder").order_by(Notification.id)
            )
        )


def test_seven_days_one_day_and_at_expiry_each_once(world: World, clock: FrozenClock, mailbox: Mailbox) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "Zapier production", ["users.read"], expires_in_days=30)
    short, _ = svc.tokens.create(world.dev, "three days", ["users.read"], expires_in_days=3)
    expires = view.expires_at
    assert expires is not None
    clock.set(expires - timedelta(days=7, seconds=1))
    assert [d.kind for d in svc.reminders.due() if d.token_id == view.id] == []
    clock.set(expires - timedelta(days=7))
    run = svc.reminders.send_due()
    assert [(d.token_id, d.kind, d.channel) for d in run.sent] == [(view.id, EXPIRES_IN_7_DAYS, NOTICE)]
    assert svc.reminders.send_due().sent == []  # once
    clock.advance(days=3)
    assert svc.reminders.send_due().sent == []  # nothing new until 1 day before
    clock.set(expires - timedelta(days=1))
    assert [d.kind for d in svc.reminders.send_due().sent] == [EXPIRES_IN_1_DAY]
    clock.set(expires)
    assert [d.kind for d in svc.reminders.send_due().sent] == [EXPIRED]
    clock.advance(days=30)
    assert svc.reminders.send_due().sent == []
    subjects = mailbox.subjects(DEV)
    label = f"{view.prefix} (Zapier production)"
    assert [s for s in subjects if "Zapier" in s] == [
        f"Your token {label} expires in 7 days",
        f"Your token {label} expires in 1 day",
        f"Your token {label} has expired",
    ]
    notes = [n for n in _notices(world) if n.details["token_id"] == view.id]
    assert [n.details["reminder"] for n in notes] == [EXPIRES_IN_7_DAYS, EXPIRES_IN_1_DAY, EXPIRED]
    assert all(n.user_id == world.dev.user_id for n in notes)
    body = mailbox.to(DEV)[0].get_content()
    assert f"/api/v1/tokens/{view.id}/rotate" in body and "Rotate" in body
    assert short.id not in {n.details["token_id"] for n in notes}


def test_short_tokens_get_only_reminders_whose_time_came_after_creation(world: World, clock: FrozenClock) -> None:
    svc = world.services
    short, _ = svc.tokens.create(world.dev, "three days", ["users.read"], expires_in_days=3)
    one_day, _ = svc.tokens.create(world.dev, "one day", ["users.read"], expires_in_days=1)
    assert svc.reminders.due() == []  # no "7 days left" for a 3-day token, no "1 day left" for a 1-day one
    clock.advance(days=2)
    sent = {(d.token_id, d.kind) for d in svc.reminders.send_due().sent}
    assert sent == {(short.id, EXPIRES_IN_1_DAY), (one_day.id, EXPIRED)}
    clock.advance(days=1)
    assert {(d.token_id, d.kind) for d in svc.reminders.send_due().sent} == {(short.id, EXPIRED)}


def test_revoked_rotated_and_deactivated_owners_get_none(world: World, clock: FrozenClock, mailbox: Mailbox) -> None:
    svc = world.services
    revoked, _ = svc.tokens.create(world.dev, "revoked", ["users.read"], expires_in_days=10)
    rotated, _ = svc.tokens.create(world.dev, "rotated", ["users.read"], expires_in_days=10)
    svc.access.create_user(OPERATOR, world.tenant_id, "leaver@acme.test", "leaver-password-1", ["Developers"])
    leaver = world.actor("leaver@acme.test")
    gone, _ = svc.tokens.create(leaver, "leaver's", ["users.read"], expires_in_days=10)
    kept, _ = svc.tokens.create(world.dev, "kept", ["users.read"], expires_in_days=10)
    clock.advance(days=2)
    svc.tokens.revoke(world.dev, revoked.id)
    successor, _, _ = svc.tokens.rotate(world.dev, rotated.id, 7 * 86400)  # still working for a week
    svc.access.deactivate_user(OPERATOR, leaver.user_id)  # type: ignore[arg-type]
    clock.advance(days=1)  # 7 days before the first tokens expire
    sent = svc.reminders.send_due().sent
    assert [(d.token_id, d.kind) for d in sent] == [(kept.id, EXPIRES_IN_7_DAYS)]
    assert gone.id not in {d.token_id for d in svc.reminders.due()}
    clock.set(successor.expires_at - timedelta(days=7))  # type: ignore[operator]
    assert [d.token_id for d in svc.reminders.send_due().sent] == [successor.id]
    assert mailbox.to("leaver@acme.test") == []


def _outbox(world: World) -> list[OutboxMessage]:
    with world.services.db.read() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_a_failed_email_is_retried_and_never_doubled(world: World, clock: FrozenClock, mailbox: Mailbox) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron job", ["users.read"], expires_in_days=8)
    clock.advance(days=1)
    mailbox.refuse = True
    run = svc.reminders.send_due()
    # Claimed once: the in-app notice exists and the email waits in the outbox, to be tried again later.
    assert [d.token_id for d in run.sent] == [view.id] and run.failed == []
    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(TokenReminder)) == 1
    assert len(_notices(world)) == 1 and svc.reminders.due() == []
    (queued,) = _outbox(world)
    assert (queued.channel, queued.attempts, queued.sent_at, queued.recipient) == ("email", 1, None, DEV)
    assert queued.next_attempt_at == clock.now() + timedelta(seconds=RETRY_DELAYS[0])
    assert "554" in (queued.last_error or "")
    mailbox.refuse = False
    assert svc.outbox.dispatch().sent == 0  # not before its backoff
    assert svc.reminders.send_due().sent == []
    clock.advance(seconds=RETRY_DELAYS[0])
    assert svc.outbox.dispatch().sent == 1
    assert svc.outbox.dispatch().sent == 0 and svc.reminders.send_due().sent == []
    assert len(mailbox.to(DEV)) == 1 and len(_notices(world)) == 1
    (done,) = _outbox(world)
    assert done.sent_at == clock.now() and done.attempts == 2
    # The resent message carries the event's stable id.
    assert mailbox.to(DEV)[0]["Message-ID"] == f"<{done.event_id}@acme.test>"


def test_webhook_events_are_signed_and_a_failing_webhook_is_retried_alone(
    world: World, clock: FrozenClock, mailbox: Mailbox, webhook: WebhookReceiver
) -> None:
    svc = world.services
    _policy, secret = svc.policies.set(world.admin, world.tenant_id, webhook_url=webhook.url)
    assert secret is not None and secret.startswith("whsec_")
    view, _ = svc.tokens.create(world.dev, "n8n", ["users.read"], expires_in_days=8)
    clock.advance(days=1)
    webhook.status = 503
    run = svc.reminders.send_due()
    assert sorted(d.channel for d in run.sent) == [NOTICE, WEBHOOK] and run.failed == []
    assert len(mailbox.to(DEV)) == 1 and webhook.events == []
    webhook.status = 200
    clock.advance(seconds=RETRY_DELAYS[0])
    assert svc.reminders.send_due().sent == []
    assert svc.outbox.dispatch().sent == 1
    assert len(mailbox.to(DEV)) == 1  # the webhook's failure never re-sent the email
    (event,) = webhook.events
    headers = httpx.Headers(event.headers)
    assert verify(secret, dict(headers), event.body, clock.now())
    assert not verify("whsec_d3Jvbmc=", dict(headers), event.body, clock.now())
    assert not verify(secret, dict(headers), event.body + b" ", clock.now())
    assert not verify(secret, dict(headers), event.body, clock.now() + timedelta(minutes=6))  # a replay, later
    payload = httpx.Response(200, content=event.body).json()
    assert payload["type"] == "token.expiry_reminder" and headers["x-kbai-event"] == "token.expiry_reminder"
    assert payload["data"]["token_id"] == view.id and payload["data"]["reminder"] == EXPIRES_IN_7_DAYS
    assert payload["data"]["owner"] == DEV and payload["id"] == headers["x-kbai-delivery"] == headers["webhook-id"]
    assert "kbai_pk_" not in event.body.decode().replace(view.prefix, "")  # only the display prefix


def test_standard_webhooks_deliveries_verify_with_the_packages_own_verifier(
    world: World, clock: FrozenClock, webhook: WebhookReceiver
) -> None:
    """standardwebhooks' Webhook.verify checks the timestamp against the real time, so here the frozen clock
    stands at the real time."""
    svc = world.services
    clock.set(datetime.now(UTC) - timedelta(days=1))
    _policy, secret = svc.policies.set(world.admin, world.tenant_id, webhook_url=webhook.url)
    assert secret is not None
    view, _ = svc.tokens.create(world.dev, "Zapier", ["users.read"], expires_in_days=8)
    clock.set(datetime.now(UTC))
    assert [d.channel for d in svc.reminders.send_due().sent] == [NOTICE, WEBHOOK]
    (event,) = webhook.events
    headers = dict(httpx.Headers(event.headers))
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(headers)
    assert headers["webhook-id"] == f"reminder-{view.id}-{EXPIRES_IN_7_DAYS}"
    assert headers["webhook-signature"].startswith("v1,")
    parsed = Webhook(secret).verify(event.body, headers)
    assert parsed["type"] == "token.expiry_reminder" and parsed["data"]["token_id"] == view.id
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(event.body.replace(b"expires_in_7", b"expires_in_1"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(event.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(event.body, {**headers, "webhook-id": "reminder-other"})
    assert standard_secret(secret) == secret  # a whsec_ secret is already in the standard form


def test_a_secret_from_before_standard_webhooks_still_verifies_both_ways(
    world: World, clock: FrozenClock, webhook: WebhookReceiver
) -> None:
    """A kbai_whsec_ secret (kbai 0.1) keeps signing the deprecated headers as before, and its whsec_ form
    (standard_secret, docs/webhooks.md) verifies the Standard Webhooks signature."""
    svc = world.services
    clock.set(datetime.now(UTC) - timedelta(days=1))
    svc.policies.set(world.admin, world.tenant_id, webhook_url=webhook.url)
    old = "kbai_whsec_" + "ab" * 32
    with svc.db.write() as s:
        from kbai.store.models import TenantPolicy

        s.get(TenantPolicy, world.tenant_id).webhook_secret_encrypted = svc.policies.secrets.encrypt(old)  # type: ignore[union-attr]
    svc.tokens.create(world.dev, "old receiver", ["users.read"], expires_in_days=8)
    clock.set(datetime.now(UTC))
    svc.reminders.send_due()
    (event,) = webhook.events
    headers = dict(httpx.Headers(event.headers))
    assert verify(old, headers, event.body, clock.now())
    Webhook(standard_secret(old)).verify(event.body, headers)


def test_a_service_tokens_reminder_goes_to_everyone_who_manages_service_tokens(
    world: World, clock: FrozenClock
) -> None:
    """It has no owner: each active member holding developer.manage_service_tokens is told once (the admin,
    and a developer given the permission); members without it, and deactivated holders, are not."""
    svc = world.services
    role = svc.access.create_role(OPERATOR, world.tenant_id, "Automation", ["developer.manage_service_tokens"])
    dev = svc.access.user_by_email(DEV, world.tenant_id)
    assert dev is not None
    svc.access.set_user_roles(OPERATOR, dev.id, [world.dev_role_id, role.id])
    gone, _ = svc.access.create_user(OPERATOR, world.tenant_id, "gone@acme.test", "gone-password-1", [role.id])
    svc.access.deactivate_user(OPERATOR, gone.id)
    plain, _ = svc.access.create_user(OPERATOR, world.tenant_id, "plain@acme.test", "plain-password-1", ["Member"])
    view, _ = svc.tokens.create_service(world.admin, "deploys", ["users.read"], expires_in_days=30)
    assert view.expires_at is not None
    clock.set(view.expires_at - timedelta(days=7))
    sent = svc.reminders.send_due().sent
    assert [(d.token_id, d.kind, d.channel) for d in sent if d.token_id == view.id] == [
        (view.id, EXPIRES_IN_7_DAYS, NOTICE)
    ]
    assert [d for d in svc.reminders.send_due().sent if d.token_id == view.id] == []  # once
    notes = [n for n in _notices(world) if n.details["token_id"] == view.id]
    assert sorted(n.user_id for n in notes) == sorted([world.admin.user_id, dev.id])
    assert all(n.title == f"The service token {view.prefix} (deploys) expires in 7 days" for n in notes)
    assert f"/api/v1/service-tokens/{view.id}/rotate" in notes[0].body
    assert plain.id not in {n.user_id for n in notes} and gone.id not in {n.user_id for n in notes}

"""`kbai worker --once` as real processes: two started at the same time against one database send each
reminder exactly once (a real SMTP server and a real webhook receiver count them), a restart sends
nothing again, and the auto-revoke policy revokes each token once. Both backends. The workers' clock
is frozen with KBAI_FAKE_NOW (test-only), so nothing sleeps; it stands at about the real time, because
Standard Webhooks verifiers check the signature's timestamp against the real clock."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from kbai.clock import FrozenClock, iso
from kbai.store.models import AuditEvent, Notification, OutboxMessage, TokenReminder
from tests.conftest import KBAI_BIN, OPERATOR, World, build_world, server_env
from tests.lifecycle.conftest import LOCAL_RECEIVERS, Mailbox, WebhookReceiver

DOCS = Path(__file__).parents[2] / "docs" / "webhooks.md"
TOKENS = 12


def documented(name: str = "verify_kbai_webhook"):
    """The Python snippet of docs/webhooks.md that defines ``name``, run exactly as written there (the
    Standard Webhooks one is the first snippet, the deprecated one comes later)."""
    snippets = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    (code,) = [c for c in snippets if f"def {name}(" in c]
    if name == "verify_kbai_webhook":
        assert code == snippets[0]
    namespace: dict[str, object] = {}
    exec(code, namespace)  # our own documentation's snippet
    return namespace[name]


def workers(database_url: str, mailbox: Mailbox, now: str, count: int) -> list[subprocess.CompletedProcess[str]]:
    env = server_env(
        database_url,
        KBAI_FAKE_NOW=now,
        KBAI_SMTP_HOST="127.0.0.1",
        KBAI_SMTP_PORT=str(mailbox.port),
        KBAI_SMTP_FROM="kbai@acme.test",
        KBAI_WEBHOOK_ALLOWED_NETWORKS=LOCAL_RECEIVERS,
    )
    procs = [
        subprocess.Popen(
            [KBAI_BIN, "worker", "--once"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def sent_counts(results: list[subprocess.CompletedProcess[str]]) -> list[int]:
    counts = []
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
        found = re.search(
            r"reminders sent: (\d+), failed: 0, auto-revoked: (\d+), deliveries: \d+, "
            r"delivery failures: 0",
            r.stdout,
        )
        assert found, r.stdout
        counts.append(int(found.group(1)))
    return counts


def test_two_workers_at_once_send_each_reminder_exactly_once(
    world: World, clock: FrozenClock, database_url: str, mailbox: Mailbox, webhook: WebhookReceiver
) -> None:
    svc = world.services
    clock.set(datetime.now(UTC) - timedelta(days=3, hours=12))
    _policy, secret = svc.policies.set(OPERATOR, world.tenant_id, webhook_url=webhook.url)
    assert secret is not None
    svc.access.set_limit(OPERATOR, 100, user_email="dev@acme.test")
    views = [
        svc.tokens.create(world.dev, f"integration {i}", ["users.read"], expires_in_days=10)[0] for i in range(TOKENS)
    ]
    # Another tenant whose policy revokes tokens unused for 3 days (their tokens never expire).
    globex = build_world(svc, "Globex", "globex.test")
    svc.policies.set(OPERATOR, globex.tenant_id, auto_revoke_unused_days=3)
    unused = [svc.tokens.create(globex.dev, f"unused {i}", ["users.read"])[0] for i in range(3)]
    now = clock.now() + timedelta(days=3, hours=12)  # 6.5 days before expiry; 3.5 days unused
    mailbox.delay = 0.05  # each email takes a moment, so the two workers' passes overlap

    results = workers(database_url, mailbox, iso(now) or "", 2)
    assert sum(sent_counts(results)) == TOKENS * 2  # the notice and the webhook of each token, once in all

    # Every token: one email, one in-app notice, one webhook event, one claim per channel.
    assert Counter(mailbox.subjects("dev@acme.test")) == Counter(
        {f"Your token {v.prefix} ({v.name}) expires in 7 days": 1 for v in views}
    )
    with svc.db.read() as s:
        notes = list(s.scalars(select(Notification).where(Notification.kind == "token.expiry_reminder")))
        claims = s.scalar(select(func.count()).select_from(TokenReminder))
        auto = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "token.revoke")))
    assert sorted(n.details["token_id"] for n in notes) == [v.id for v in views]
    assert claims == TOKENS * 2
    deliveries = [httpx.Headers(e.headers)["webhook-id"] for e in webhook.events]
    assert sorted(deliveries) == sorted(f"reminder-{v.id}-expires_in_7_days" for v in views)
    with svc.db.read() as s:
        outbox = list(s.scalars(select(OutboxMessage)))
    assert len(outbox) == TOKENS * 2 + 3 and all(m.sent_at is not None and m.attempts == 1 for m in outbox)

    # Each event verifies with the recipes in docs/webhooks.md (Standard Webhooks, and the deprecated
    # headers), and a tampered one does not.
    verify, legacy = documented(), documented("verify_legacy_kbai_webhook")
    for event in webhook.events:
        headers = httpx.Headers(event.headers)
        assert verify(secret, headers, event.body)["data"]["reminder"] == "expires_in_7_days"
        assert verify(secret, headers, event.body.replace(b"expires_in_7", b"expires_in_1")) is None
        assert legacy(secret, headers, event.body, now=now.timestamp())
        assert not legacy(secret, headers, event.body.replace(b"expires_in_7", b"expires_in_1"), now=now.timestamp())
        assert not legacy(secret, headers, event.body, now=now.timestamp() + 301)  # replayed 5 min later

    # The auto-revoke policy: each unused token revoked once, by the system, its owner told once.
    assert sorted(int(e.target_id or 0) for e in auto) == [v.id for v in unused]
    assert {e.actor for e in auto} == {"system (auto-revoke policy)"}
    assert len(mailbox.to("dev@globex.test")) == 3

    # A restart (or cron's next run) at the same time sends nothing again.
    again = workers(database_url, mailbox, iso(now) or "", 1)
    assert sent_counts(again) == [0] and "auto-revoked: 0" in again[0].stdout
    assert len(mailbox.to("dev@acme.test")) == TOKENS and len(webhook.events) == TOKENS

    # Six days later: the 1-day reminders, once each, with two workers again.
    later = workers(database_url, mailbox, iso(now + timedelta(days=6)) or "", 2)
    assert sum(sent_counts(later)) == TOKENS * 2
    subjects = mailbox.subjects("dev@acme.test")
    assert sum(s.endswith("expires in 1 day") for s in subjects) == TOKENS


def test_the_worker_loops_until_sigterm(world: World, clock: FrozenClock, database_url: str, mailbox: Mailbox) -> None:
    """Without --once the worker makes a pass every --interval seconds and exits cleanly on SIGTERM."""
    import signal
    import time

    svc = world.services
    view, _ = svc.tokens.create(world.dev, "looped", ["users.read"], expires_in_days=3)
    env = server_env(
        database_url,
        KBAI_FAKE_NOW=iso(clock.now() + timedelta(days=2)) or "",
        KBAI_SMTP_HOST="127.0.0.1",
        KBAI_SMTP_PORT=str(mailbox.port),
        KBAI_WEBHOOK_ALLOWED_NETWORKS=LOCAL_RECEIVERS,
    )
    proc = subprocess.Popen(
        [KBAI_BIN, "worker", "--interval", "0.2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not mailbox.to("dev@acme.test") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # waiting for another process, not for the clock: the worker's clock is frozen
        assert mailbox.subjects("dev@acme.test") == [f"Your token {view.prefix} (looped) expires in 1 day"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "a pass every 0.2 s" in out
    assert len(mailbox.to("dev@acme.test")) == 1  # the passes after the first sent nothing again

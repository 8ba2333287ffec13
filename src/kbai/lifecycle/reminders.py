"""Expiry reminders: 7 days before, 1 day before and at expiry, each sent exactly once.

A reminder goes out on two *channels*: ``notice`` (an in-app notification, plus an email when SMTP
is configured) and ``webhook`` (a signed event to the tenant's webhook, when it has one). Each
(token, kind, channel) is claimed by inserting a ``token_reminders`` row, and **in that same
transaction** the notification is added and the email or webhook event is written to the outbox
(:mod:`kbai.delivery.outbox`); nothing is sent inside it. The outbox sends after the commit, with a hard
deadline, and retries until the receiver takes it:

* several ``kbai worker`` processes at once: on PostgreSQL the second insert of the same key waits
  for the first transaction and then does nothing (``ON CONFLICT DO NOTHING``); on SQLite the write
  transaction begins with ``BEGIN IMMEDIATE``, so the second worker only starts once the first has
  committed, and then finds the row. Either way exactly one claims, so the notification exists
  exactly once and each email or webhook event is queued exactly once (with a stable id).
* a send that fails (SMTP refuses, webhook not 2xx or too slow) stays in the outbox and is tried
  again later; the claim stands, so nothing is ever queued twice. A restart re-queues nothing.
* the channels are claimed separately, so a webhook configured later still gets its events.
* no transaction waits on a receiver: the write lock (SQLite) is held for milliseconds.

Only the kind that is current is sent (a worker that was down for a week sends "1 day left", not
"7 days left" too); a kind whose time came before the token was created is skipped (a 3-day token
gets no 7-day reminder); "expired" is sent for up to :data:`LATE_LIMIT` after expiry. Tokens revoked
or rotated (a rotation schedules the old token's revocation) and tokens of deactivated users get none.
A service token (owned by the tenant) has no owner: its in-app reminder goes to every active member who
holds ``developer.manage_service_tokens`` when it is sent (one claim, one notification each).
Every time comes from the injectable clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kbai.access.catalog import MANAGE_SERVICE_TOKENS, Catalog
from kbai.access.service import holders_of
from kbai.clock import Clock, human, iso, utc_seconds
from kbai.delivery.notifications import NewNotification, Notifications, NotificationView
from kbai.delivery.outbox import Outbox
from kbai.store import Database
from kbai.store.models import TenantPolicy, Token, TokenReminder, User
from kbai.tokenformat import redact
from kbai.tokens.policy import webhook_of

log = logging.getLogger("kbai.reminders")

EXPIRES_IN_7_DAYS = "expires_in_7_days"
EXPIRES_IN_1_DAY = "expires_in_1_day"
EXPIRED = "expired"
# Latest first: the first whose time has come is the current one.
LEADS = ((EXPIRES_IN_1_DAY, timedelta(days=1)), (EXPIRES_IN_7_DAYS, timedelta(days=7)))
LATE_LIMIT = timedelta(days=7)
NOTICE = "notice"
WEBHOOK = "webhook"
TOKEN_EXPIRY_REMINDER = "token.expiry_reminder"  # notification kind and webhook event type


def current_kind(created_at: datetime, expires_at: datetime, now: datetime) -> str | None:
    """The reminder due for a token at ``now``, if any (see the module docstring)."""
    if now >= expires_at:
        return EXPIRED if now < expires_at + LATE_LIMIT else None
    for kind, lead in LEADS:
        due_at = expires_at - lead
        if now >= due_at:
            return kind if due_at > created_at else None
    return None


@dataclass(frozen=True)
class Due:
    token_id: int
    kind: str
    channel: str


@dataclass
class ReminderRun:
    sent: list[Due] = field(default_factory=list)
    failed: list[Due] = field(default_factory=list)


class Reminders:
    def __init__(
        self, db: Database, clock: Clock, notifications: Notifications, outbox: Outbox, catalog: Catalog | None = None
    ) -> None:
        self.catalog = catalog  # who holds developer.manage_service_tokens (service tokens' reminders)
        self.db = db
        self.clock = clock
        self.notifications = notifications
        self.outbox = outbox

    def due(self) -> list[Due]:
        """Every (token, kind, channel) due now and not yet sent."""
        now = utc_seconds(self.clock.now())
        with self.db.read() as s:
            rows = s.execute(
                select(Token.id, Token.created_at, Token.expires_at, TenantPolicy.webhook_url)
                .outerjoin(User, User.id == Token.user_id)  # service tokens too (owned by the tenant)
                .outerjoin(TenantPolicy, TenantPolicy.tenant_id == Token.tenant_id)
                .where(
                    Token.revoked_at.is_(None),
                    Token.expires_at.is_not(None),
                    or_(User.active.is_(True), Token.user_id.is_(None)),
                    Token.expires_at <= now + timedelta(days=7),
                    Token.expires_at > now - LATE_LIMIT,
                )
                .order_by(Token.id)
            ).all()
            sent = (
                {
                    (t, k, c)
                    for t, k, c in s.execute(
                        select(TokenReminder.token_id, TokenReminder.kind, TokenReminder.channel).where(
                            TokenReminder.token_id.in_([r[0] for r in rows])
                        )
                    )
                }
                if rows
                else set()
            )
        out: list[Due] = []
        for token_id, created_at, expires_at, webhook_url in rows:
            assert expires_at is not None  # the query takes only tokens with an expiry
            kind = current_kind(created_at, expires_at, now)
            if kind is None:
                continue
            for channel in (NOTICE, WEBHOOK) if webhook_url else (NOTICE,):
                if (token_id, kind, channel) not in sent:
                    out.append(Due(token_id, kind, channel))
        return out

    def send_due(self) -> ReminderRun:
        """Claim and queue everything due now, and hand it to the outbox; a failure is logged and left for the
        next pass. ``sent``: claimed and queued (the outbox reports the deliveries)."""
        run = ReminderRun()
        for due in self.due():
            try:
                if self.send(due):
                    run.sent.append(due)
            except Exception as exc:  # noqa: BLE001 - one bad endpoint must not stop the others
                log.error(
                    "reminder %s for token %d via %s failed (will retry): %s: %s",
                    due.kind,
                    due.token_id,
                    due.channel,
                    type(exc).__name__,
                    redact(str(exc))[:300],
                )
                run.failed.append(due)
        return run

    def send(self, due: Due) -> bool:
        """Claim one reminder and queue its messages in one transaction, then hand them to the outbox.
        False: not due any more, or another worker claimed it."""
        now = utc_seconds(self.clock.now())
        views: list[NotificationView] = []
        webhook_event: int | None = None
        with self.db.write() as s:
            row = s.execute(
                select(Token, User.email, User.active)
                .outerjoin(User, User.id == Token.user_id)
                .where(Token.id == due.token_id)
            ).first()
            if row is None:
                return False
            token, email, active = row
            if token.user_id is None:  # a service token: to everyone who manages them (below)
                active = True
            # Checked again inside the transaction: it may have been revoked or rotated since due().
            if (
                token.revoked_at is not None
                or not active
                or token.expires_at is None
                or current_kind(token.created_at, token.expires_at, now) != due.kind
            ):
                return False
            if due.channel == WEBHOOK and webhook_of(s, token.tenant_id) is None:
                return False
            if not self._claim(s, due, now):
                return False
            title, body = _message(token, due.kind)
            if due.channel == NOTICE:
                recipients = (
                    [(token.user_id, email)]
                    if token.user_id is not None
                    else holders_of(s, token.tenant_id, MANAGE_SERVICE_TOKENS, self.catalog)
                    if self.catalog is not None
                    else []
                )
                views = self.notifications.add(
                    s,
                    [
                        NewNotification(
                            user_id=user_id,
                            tenant_id=token.tenant_id,
                            email=address,
                            kind=TOKEN_EXPIRY_REMINDER,
                            title=title,
                            body=body,
                            details=_details(token, due.kind),
                        )
                        for user_id, address in recipients
                    ],
                    now,
                )
            else:
                webhook_event = self.outbox.add_webhook(
                    s,
                    event_id=f"reminder-{token.id}-{due.kind}",
                    tenant_id=token.tenant_id,
                    event_type=TOKEN_EXPIRY_REMINDER,
                    data={**_details(token, due.kind), "owner": email, "tenant_id": token.tenant_id},
                    at=now,
                )
        # Committed: now (and only now) anything leaves.
        self.notifications.deliver(views)
        self.outbox.after_commit([webhook_event])
        return True

    @staticmethod
    def _claim(s: Session, due: Due, now: datetime) -> bool:
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        claimed = s.execute(
            dialect.insert(TokenReminder)
            .values(token_id=due.token_id, kind=due.kind, channel=due.channel, sent_at=now)
            .on_conflict_do_nothing(index_elements=["token_id", "kind", "channel"])
            .returning(TokenReminder.token_id)
        ).first()
        return claimed is not None


def _details(token: Token, kind: str) -> dict[str, object]:
    return {
        "reminder": kind,
        "token_id": token.id,
        "prefix": token.prefix,
        "name": token.name,
        "scopes": list(token.scopes),
        "expires_at": iso(token.expires_at),
    }


def _message(token: Token, kind: str) -> tuple[str, str]:
    label = f"{token.prefix} ({token.name[:60]})"
    when = human(token.expires_at)
    service = token.user_id is None
    whose = "The service token" if service else "Your token"
    route = f"/api/v1/service-tokens/{token.id}/rotate" if service else f"/api/v1/tokens/{token.id}/rotate"
    rotate = (
        f"Rotate it before then with POST {route}"
        + ("" if service else ", or under System Settings → API Keys (Rotate),")
        + " and update the integrations that use it."
    )
    if kind == EXPIRES_IN_7_DAYS:
        return f"{whose} {label} expires in 7 days", f"It stops working at {when}. {rotate}"
    if kind == EXPIRES_IN_1_DAY:
        return f"{whose} {label} expires in 1 day", f"It stops working at {when}. {rotate}"
    return (
        f"{whose} {label} has expired",
        f"It stopped working at {when}: requests that use it get 401. If an integration still needs it, "
        "create a new token under System Settings → API Keys and update the integration.",
    )

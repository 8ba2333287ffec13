"""In-app notifications: short messages a user reads at ``GET /api/v1/notifications``.

Domain code adds them inside its own write transaction (:meth:`Notifications.add`), so a
notification exists if and only if the change it reports was committed: exactly once. When SMTP is
configured the same call writes an email for each of them to the outbox (:mod:`kbai.delivery.outbox`), in
that same transaction. After the commit the caller calls :meth:`Notifications.deliver`, which hands
those emails to the outbox (sent at least once, outside any transaction) and the new notifications
to every in-process sender in ``senders``. A sender or an email that fails is logged and never
undoes or blocks the change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from kbai.clock import Clock, utc_seconds
from kbai.delivery.outbox import Outbox
from kbai.store import Database
from kbai.store.audit import redacted
from kbai.store.models import Notification
from kbai.tokenformat import redact

log = logging.getLogger("kbai.notifications")
TOKEN_LEAKED = "token.leaked"


@dataclass(frozen=True)
class NewNotification:
    """What to tell one user. ``email`` is for senders of other channels; it is not stored."""

    user_id: int
    tenant_id: int
    email: str
    kind: str
    title: str
    body: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NotificationView:
    id: int
    user_id: int
    tenant_id: int
    kind: str
    title: str
    body: str
    details: dict[str, Any]
    created_at: datetime
    read_at: datetime | None
    email: str | None = None
    outbox_id: int | None = None  # the email of this notification waiting in the outbox


Sender = Callable[[Sequence[NotificationView]], None]


EMAIL_FOOTER = "\n\nSee it in kbai: System Settings → API Keys ({base}/system-settings/api-keys).\n"


class Notifications:
    def __init__(self, db: Database, clock: Clock, outbox: Outbox | None = None, public_url: str | None = None) -> None:
        self.db = db
        # With KBAI_PUBLIC_URL the link is the full address people open; without, the path alone.
        self.email_footer = EMAIL_FOOTER.format(base=public_url or "")
        self.clock = clock
        self.outbox = outbox
        # Called after commit with the notifications just added (in-process hooks; email goes by the outbox).
        self.senders: list[Sender] = []

    def add(self, session: Session, items: Iterable[NewNotification], at: datetime) -> list[NotificationView]:
        """Insert ``items`` in the caller's transaction (one bulk INSERT); returns their views for :meth:`deliver`."""
        items = list(items)
        if not items:
            return []
        # Belt and braces, as in the audit log: nothing token-shaped is ever stored.
        rows = [
            {
                "tenant_id": i.tenant_id,
                "user_id": i.user_id,
                "kind": i.kind,
                "title": redact(i.title)[:200],
                "body": redact(i.body),
                "details": redacted(i.details),
                "created_at": at,
                "read_at": None,
            }
            for i in items
        ]
        ids = session.scalars(insert(Notification).returning(Notification.id, sort_by_parameter_order=True), rows).all()
        views = []
        for nid, item, row in zip(ids, items, rows, strict=True):
            outbox_id = None
            if self.outbox is not None and self.outbox.mail_enabled and item.email:
                outbox_id = self.outbox.add_email(
                    session,
                    event_id=f"notification-{nid}",
                    tenant_id=item.tenant_id,
                    user_id=item.user_id,
                    to=item.email,
                    subject=str(row["title"]),
                    body=str(row["body"]) + self.email_footer,
                    event_type=item.kind,
                    at=at,
                )
            views.append(NotificationView(id=nid, email=item.email, outbox_id=outbox_id, **dict(row.items())))
        return views

    def deliver(self, views: Sequence[NotificationView]) -> None:
        """After the commit: send the emails of ``views`` (outbox) and call the in-process senders."""
        if not views:
            return
        if self.outbox is not None:
            self.outbox.after_commit(v.outbox_id for v in views)
        for sender in self.senders:
            try:
                sender(views)
            except Exception as exc:  # noqa: BLE001 - another channel failing must not undo the change
                log.error(
                    "notification sender %s failed: %s", getattr(sender, "__name__", sender), redact(str(exc))[:300]
                )

    def list(
        self, user_id: int, *, before_id: int | None = None, limit: int = 50, unread_only: bool = False
    ) -> list[NotificationView]:
        """The user's notifications, newest first; ``before_id`` is the previous page's cursor."""
        query = select(Notification).where(Notification.user_id == user_id).order_by(Notification.id.desc())
        if before_id is not None:
            query = query.where(Notification.id < before_id)
        if unread_only:
            query = query.where(Notification.read_at.is_(None))
        with self.db.read() as s:
            return [_view(n) for n in s.scalars(query.limit(limit))]

    def unread(self, user_id: int) -> int:
        with self.db.read() as s:
            count = s.scalar(
                select(func.count(Notification.id)).where(
                    Notification.user_id == user_id, Notification.read_at.is_(None)
                )
            )
        return int(count or 0)

    def mark_read(self, user_id: int, notification_id: int | None = None) -> int:
        """Mark one (or, with no id, every) unread notification of the user read. Returns how many changed."""
        now = utc_seconds(self.clock.now())
        query = update(Notification).where(Notification.user_id == user_id, Notification.read_at.is_(None))
        if notification_id is not None:
            query = query.where(Notification.id == notification_id)
        with self.db.write() as s:
            result = s.execute(query.values(read_at=now))
            return int(getattr(result, "rowcount", 0) or 0)

    def get(self, user_id: int, notification_id: int) -> NotificationView | None:
        with self.db.read() as s:
            row = s.get(Notification, notification_id)
            return _view(row) if row is not None and row.user_id == user_id else None


def _view(n: Notification, email: str | None = None) -> NotificationView:
    return NotificationView(
        id=n.id,
        user_id=n.user_id,
        tenant_id=n.tenant_id,
        kind=n.kind,
        title=n.title,
        body=n.body,
        details=dict(n.details),
        created_at=n.created_at,
        read_at=n.read_at,
        email=email,
    )

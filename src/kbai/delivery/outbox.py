"""The outbox: every webhook event and every email leaves kbai through it, after the commit that caused it.

Domain code adds an outbox row in the same transaction as the change it reports (a claimed expiry
reminder, a revoked token), so a message exists if and only if that change committed, and no
transaction ever waits on the network: on SQLite, where a write transaction holds the database-wide
write lock, one tenant's slow receiver would otherwise stall every tenant's logins and revocations.

After the commit the caller hands the new rows to :meth:`Outbox.after_commit`: in a serving process
a background thread sends them (the request does not wait); elsewhere (``kbai worker``, the CLI,
tests) the caller's thread does, still outside any transaction. ``kbai worker`` also sends, on every
pass, whatever is due (retries, rows left by a process that stopped).

Sending one row: **claim** it with a lease (one short UPDATE that only one process wins), **send**
it within the hard deadline (:mod:`kbai.egress`, :mod:`kbai.delivery.mail`), then **mark** it sent, or
schedule the next attempt after :data:`RETRY_DELAYS`, giving up (``failed_at``, logged as an error)
after the last one. Delivery is at least once: a process that dies between the receiver's answer
and the mark leaves the row to be sent again when its lease ends, with the same ``event_id``
(``webhook-id`` for webhooks, ``Message-ID`` for email), so receivers deduplicate on it.
"""

from __future__ import annotations

import logging
import smtplib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from kbai.clock import Clock, utc_seconds
from kbai.delivery.mail import Mailer
from kbai.delivery.webhooks import WebhookFailed, Webhooks
from kbai.errors import KbaiError
from kbai.secretbox import SecretBox
from kbai.store import Database
from kbai.store.models import OutboxMessage, TenantPolicy
from kbai.tokenformat import redact

log = logging.getLogger("kbai.outbox")

WEBHOOK = "webhook"
EMAIL = "email"
# Wait after the 1st, 2nd, ... failed attempt; after the last, give up (8 attempts over about 28 hours).
RETRY_DELAYS = (60, 300, 1800, 7200, 18000, 36000, 36000)
LEASE_MARGIN_SECONDS = 30
BATCH = 100
POLL_SECONDS = 30.0  # a serving process's dispatcher also looks for due retries this often
KEEP_DAYS = 7  # sent and given-up rows are kept this long (to look into), then pruned by the worker


@dataclass(frozen=True)
class DispatchResult:
    sent: int = 0
    failed: int = 0


@dataclass(frozen=True)
class _Claimed:
    id: int
    event_id: str
    channel: str
    tenant_id: int
    user_id: int | None
    event_type: str
    recipient: str | None
    subject: str | None
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    webhook_url: str | None
    webhook_secret_encrypted: str | None


class _Permanent(Exception):
    """Sending this row can never work (e.g. the tenant removed its webhook): no retry."""


class Outbox:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        webhooks: Webhooks,
        mailer: Mailer | None,
        secrets: SecretBox,
        deadline_seconds: float,
    ) -> None:
        self.db = db
        self.clock = clock
        self.webhooks = webhooks
        self.mailer = mailer
        self.secrets = secrets
        self.deadline_seconds = deadline_seconds
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self._failed = 0

    @property
    def mail_enabled(self) -> bool:
        return self.mailer is not None

    # ---- writing (inside the caller's transaction) ---------------------------------------------
    def add_email(
        self,
        session: Session,
        *,
        event_id: str,
        tenant_id: int,
        user_id: int | None,
        to: str,
        subject: str,
        body: str,
        event_type: str,
        at: datetime,
    ) -> int:
        return self._add(
            session,
            event_id=event_id,
            channel=EMAIL,
            tenant_id=tenant_id,
            user_id=user_id,
            event_type=event_type,
            recipient=to,
            subject=redact(subject)[:200],
            payload={"body": redact(body)},
            at=at,
        )

    def add_webhook(
        self, session: Session, *, event_id: str, tenant_id: int, event_type: str, data: dict[str, Any], at: datetime
    ) -> int:
        return self._add(
            session,
            event_id=event_id,
            channel=WEBHOOK,
            tenant_id=tenant_id,
            user_id=None,
            event_type=event_type,
            recipient=None,
            subject=None,
            payload=data,
            at=at,
        )

    @staticmethod
    def _add(session: Session, *, at: datetime, **values: Any) -> int:
        at = utc_seconds(at)
        return int(
            session.scalars(
                insert(OutboxMessage).returning(OutboxMessage.id),
                [
                    {
                        **values,
                        "created_at": at,
                        "attempts": 0,
                        "next_attempt_at": at,
                        "locked_until": None,
                        "sent_at": None,
                        "failed_at": None,
                        "last_error": None,
                    }
                ],
            ).one()
        )

    # ---- sending (never inside a transaction) ---------------------------------------------------
    def after_commit(self, ids: Iterable[int | None]) -> None:
        """Send the rows just committed: through the background thread when it runs, else right here. Never
        raises: whatever could not be sent stays due for the next attempt."""
        wanted = [i for i in ids if i]
        if not wanted:
            return
        if self._thread is not None and self._thread.is_alive():
            self._wake.set()
            return
        try:
            self.dispatch(wanted)
        except Exception as exc:  # noqa: BLE001 - e.g. the database went away; the rows stay due
            log.error("outbox: sending after the commit failed (left for the next pass): %s", type(exc).__name__)

    def dispatch(self, ids: Sequence[int] | None = None, *, limit: int = BATCH) -> DispatchResult:
        """Send the rows that are due (only ``ids`` when given). Rows another process holds are skipped."""
        claimed = self._claim(ids, limit)
        sent = failed = 0
        for row in claimed:
            try:
                self._send(row)
            except _Permanent as exc:
                self._mark(row, str(exc), permanent=True)
                failed += 1
            except (WebhookFailed, KbaiError, smtplib.SMTPException, OSError) as exc:
                self._mark(row, _reason(exc), permanent=False)
                failed += 1
            else:
                self._mark(row, None, permanent=False)
                sent += 1
        with self._lock:
            self._sent += sent
            self._failed += failed
        return DispatchResult(sent, failed)

    def prune(self, older_than: timedelta = timedelta(days=KEEP_DAYS)) -> int:
        """Delete rows sent or given up on more than ``older_than`` ago; returns how many."""
        cutoff = utc_seconds(self.clock.now()) - older_than
        with self.db.write() as s:
            result = s.execute(
                delete(OutboxMessage).where(
                    or_(
                        and_(OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at < cutoff),
                        and_(OutboxMessage.failed_at.is_not(None), OutboxMessage.failed_at < cutoff),
                    )
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def totals(self) -> DispatchResult:
        """What this process sent and failed to send so far (the worker reports the difference per pass)."""
        with self._lock:
            return DispatchResult(self._sent, self._failed)

    def _due(self, now: datetime) -> tuple[ColumnElement[bool], ...]:
        return (
            OutboxMessage.sent_at.is_(None),
            OutboxMessage.failed_at.is_(None),
            OutboxMessage.next_attempt_at <= now,
            or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until <= now),
        )

    def _claim(self, ids: Sequence[int] | None, limit: int) -> list[_Claimed]:
        now = utc_seconds(self.clock.now())
        query = select(OutboxMessage.id).where(*self._due(now)).order_by(OutboxMessage.id).limit(limit)
        if ids is not None:
            query = query.where(OutboxMessage.id.in_(list(ids)))
        with self.db.read() as s:
            candidates = list(s.scalars(query))
        if not candidates:
            return []
        lease = now + timedelta(seconds=self.deadline_seconds + LEASE_MARGIN_SECONDS)
        with self.db.write() as s:
            # The conditions again, in the UPDATE itself: of two processes only one matches each row.
            won = list(
                s.scalars(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_(candidates), *self._due(now))
                    .values(locked_until=lease, attempts=OutboxMessage.attempts + 1)
                    .returning(OutboxMessage.id)
                )
            )
            if not won:
                return []
            rows = s.execute(
                select(OutboxMessage, TenantPolicy.webhook_url, TenantPolicy.webhook_secret_encrypted)
                .outerjoin(TenantPolicy, TenantPolicy.tenant_id == OutboxMessage.tenant_id)
                .where(OutboxMessage.id.in_(won))
                .order_by(OutboxMessage.id)
            ).all()
            return [
                _Claimed(
                    id=m.id,
                    event_id=m.event_id,
                    channel=m.channel,
                    tenant_id=m.tenant_id,
                    user_id=m.user_id,
                    event_type=m.event_type,
                    recipient=m.recipient,
                    subject=m.subject,
                    payload=dict(m.payload),
                    created_at=m.created_at,
                    attempts=m.attempts,
                    webhook_url=url,
                    webhook_secret_encrypted=sealed,
                )
                for m, url, sealed in rows
            ]

    def _send(self, row: _Claimed) -> None:
        if row.channel == EMAIL:
            if self.mailer is None:
                raise _Permanent("SMTP is no longer configured (KBAI_SMTP_HOST)")
            if not row.recipient:
                raise _Permanent("no recipient")
            self.mailer.send(
                row.recipient,
                row.subject or "",
                str(row.payload.get("body", "")),
                message_id=f"<{row.event_id}@{self.mailer.domain or 'kbai'}>",
            )
            return
        if row.webhook_url is None or row.webhook_secret_encrypted is None:
            raise _Permanent("the tenant has no webhook any more")
        secret = self.secrets.decrypt(row.webhook_secret_encrypted)
        self.webhooks.post(
            row.webhook_url, secret, row.event_type, row.payload, event_id=row.event_id, created_at=row.created_at
        )

    def _mark(self, row: _Claimed, error: str | None, *, permanent: bool) -> None:
        now = utc_seconds(self.clock.now())
        values: dict[str, Any] = {"locked_until": None, "last_error": None if error is None else error[:300]}
        if error is None:
            values["sent_at"] = now
        elif permanent or row.attempts > len(RETRY_DELAYS):
            values["failed_at"] = now
            log.error(
                "outbox: gave up on %s %s (tenant %d) after %d attempt(s): %s",
                row.channel,
                row.event_id,
                row.tenant_id,
                row.attempts,
                error,
            )
        else:
            delay = RETRY_DELAYS[row.attempts - 1]
            values["next_attempt_at"] = now + timedelta(seconds=delay)
            log.warning(
                "outbox: %s %s (tenant %d) failed, attempt %d, next in %d s: %s",
                row.channel,
                row.event_id,
                row.tenant_id,
                row.attempts,
                delay,
                error,
            )
        with self.db.write() as s:
            s.execute(update(OutboxMessage).where(OutboxMessage.id == row.id).values(**values))

    # ---- the background dispatcher of a serving process ------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kbai-outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout=self.deadline_seconds + 5)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                while self.dispatch() != DispatchResult() and not self._stop.is_set():
                    pass  # more than one batch was due
            except Exception as exc:  # noqa: BLE001 - e.g. the database is briefly unreachable; next wake retries
                log.error("outbox dispatcher pass failed: %s", type(exc).__name__)


def _reason(exc: Exception) -> str:
    """A short, URL-free, token-free reason for the log and ``last_error``."""
    if isinstance(exc, (WebhookFailed, KbaiError)):
        text = str(exc)
    elif isinstance(exc, smtplib.SMTPResponseException):
        text = f"SMTP {exc.smtp_code}: {exc.smtp_error.decode(errors='replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(" ".join(text.split()))[:300]

"""Reuse of a rotated-out token: logged on every attempt, and the owner told once (in-app, and by email
when SMTP is set), never revoked further (it already stopped). After a self-rotation the old token should
fall silent; one that comes back means a copy lives somewhere the automation does not control.

Each instance remembers the tokens it has already handled, so a flood of reuses costs one conditional
UPDATE per token and instance (the claim ``reuse_alerted_at IS NULL`` makes the alert go out exactly once
across every instance), and no I/O after that.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy import select, update

from kbai.clock import Clock, human, utc_seconds
from kbai.delivery.notifications import NewNotification, Notifications
from kbai.store import Database, audit
from kbai.store.audit import Actor
from kbai.store.models import Token, User
from kbai.tokens.verify import TokenRecord

log = logging.getLogger("kbai.tokens")
TOKEN_REUSED = "token.reused_after_rotation"
REUSE_DETECTOR = Actor(kind="system", email="rotation reuse detection")


class ReuseAlerts:
    def __init__(self, db: Database, clock: Clock, notifications: Notifications) -> None:
        self.db = db
        self.clock = clock
        self.notifications = notifications
        self._handled: set[int] = set()
        self._lock = threading.Lock()

    def handled(self, token_id: int) -> bool:
        """Already alerted from this instance (so a reuse needs no I/O)."""
        return token_id in self._handled

    def reused(self, record: TokenRecord, ip: str) -> bool:
        """A rotated-out token was presented again: log it, and alert its owner once. True when this call
        sent the alert."""
        log.warning("rotated-out token %s (id %s) used again from %s", record.prefix, record.token_id, ip)
        if record.user_id is None:  # a service token is never rotated out (nobody to alert here)
            return False
        with self._lock:
            if record.token_id in self._handled:
                return False
            if len(self._handled) > 100_000:
                self._handled.clear()
            self._handled.add(record.token_id)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            claimed = s.scalar(
                update(Token)
                .where(Token.id == record.token_id, Token.reuse_alerted_at.is_(None))
                .values(reuse_alerted_at=now)
                .returning(Token.id)
                .execution_options(synchronize_session=False)
            )
            if claimed is None:
                return False
            email = s.scalar(select(User.email).where(User.id == record.user_id)) or record.email
            audit.record(
                s,
                REUSE_DETECTOR.with_ip(ip),
                "token.reuse_after_rotation",
                at=now,
                target_type="token",
                target_id=record.token_id,
                tenant_id=record.tenant_id,
                details={"name": record.name, "prefix": record.prefix, "ip": ip},
            )
            added = self.notifications.add(s, [_notice(record, email, ip, now)], now)
        self.notifications.deliver(added)
        return True


def _notice(record: TokenRecord, email: str, ip: str, at: datetime) -> NewNotification:
    assert record.user_id is not None  # (reused() leaves service tokens out)
    return NewNotification(
        user_id=record.user_id,
        tenant_id=record.tenant_id,
        email=email,
        kind=TOKEN_REUSED,
        title=f"Your rotated token {record.prefix} ({record.name[:60]}) was used again"[:200],
        body=(
            f"Token {record.prefix} was replaced by a rotation, but a request at {human(at)} from {ip} still "
            "used it (refused with 401). Something still holds the old token: find it and switch it to the new "
            "one. If you don't know who that is, the token may have leaked: revoke its successor and create a "
            "new token under System Settings → API Keys."
        ),
        details={"token_id": record.token_id, "prefix": record.prefix, "name": record.name, "ip": ip},
    )

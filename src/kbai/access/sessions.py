"""Interactive login sessions, kept server-side so logout and deactivation end them at once.

The cookie carries 32 random bytes; the database holds only their SHA-256. Every login makes a
new session id (no fixation), and each session has its own CSRF token for cookie-authenticated
writes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select

from kbai import audit, errors
from kbai.access.service import AccessService
from kbai.audit import Actor
from kbai.clock import utc_seconds
from kbai.errors import KbaiError
from kbai.store.models import LoginSession, Tenant, User


@dataclass(frozen=True)
class SessionInfo:
    session_id: int
    user_id: int
    tenant_id: int
    tenant_name: str
    email: str
    csrf_token: str
    tenant_external_id: str | None = None

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf_token.encode())


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


class SessionService:
    def __init__(self, access: AccessService, ttl_seconds: int, *, password_login: bool = True,
                 password_login_advice: str = "") -> None:
        self.access = access
        self.db = access.db
        self.clock = access.clock
        self.ttl = timedelta(seconds=ttl_seconds)
        self.password_login = password_login
        self.password_login_advice = password_login_advice

    def login(self, email: str, password: str, ip: str | None) -> tuple[str, SessionInfo]:
        """Check the password and open a new session. Returns (cookie value, session)."""
        if not self.password_login:  # KBAI_PASSWORD_LOGIN=false: no password is even checked
            raise KbaiError(errors.PASSWORD_LOGIN_DISABLED, advice=self.password_login_advice)
        user = self.access.authenticate(email, password)
        return self.open(user.id, ip)

    def open(self, user_id: int, ip: str | None, details: dict[str, Any] | None = None) -> tuple[str, SessionInfo]:
        """A new session for a user whose login was checked (password here, or a sign-in by ``kbai.identity``)."""
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            user, tenant = s.execute(select(User, Tenant).join(Tenant, Tenant.id == User.tenant_id)
                                     .where(User.id == user_id)).one()
            row = LoginSession(digest=_digest(cookie), user_id=user.id, csrf_token=csrf, created_at=now,
                               expires_at=now + self.ttl, ip=ip)
            s.add(row)
            s.flush()
            actor = Actor(kind="user", user_id=user.id, tenant_id=user.tenant_id, email=user.email, ip=ip)
            audit.record(s, actor, "session.login", at=now, target_type="user", target_id=user.id, details=details)
            info = SessionInfo(row.id, user.id, user.tenant_id, tenant.name, user.email, csrf, tenant.external_id)
        return cookie, info

    def resolve(self, cookie: str | None) -> SessionInfo | None:
        """The live session behind a cookie, or None (unknown, expired, or its user deactivated)."""
        if not cookie or len(cookie) > 200:
            return None
        now = self.clock.now()
        with self.db.read() as s:
            row = s.execute(
                select(LoginSession, User, Tenant.name, Tenant.external_id)
                .join(User, User.id == LoginSession.user_id)
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(LoginSession.digest == _digest(cookie))
            ).first()
        if row is None:
            return None
        sess, user, tenant_name, tenant_external_id = row
        if sess.expires_at <= now or not user.active:
            return None
        return SessionInfo(sess.id, user.id, user.tenant_id, tenant_name, user.email, sess.csrf_token,
                           tenant_external_id)

    def logout(self, info: SessionInfo, ip: str | None) -> None:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            s.execute(delete(LoginSession).where(LoginSession.id == info.session_id))
            actor = Actor(kind="user", user_id=info.user_id, tenant_id=info.tenant_id, email=info.email, ip=ip)
            audit.record(s, actor, "session.logout", at=now, target_type="user", target_id=info.user_id)

    def end_all(self, user_id: int) -> None:
        with self.db.write() as s:
            s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))

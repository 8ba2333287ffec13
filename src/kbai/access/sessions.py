"""Interactive login sessions, kept server-side so logout and deactivation end them at once.

The cookie carries 32 random bytes; the database holds only their SHA-256. Every login makes a
new session id (no fixation), and each session has its own CSRF token for cookie-authenticated
writes.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from kbai import audit, errors
from kbai.access.service import AccessService
from kbai.audit import Actor
from kbai.clock import utc_seconds
from kbai.compare import same_secret
from kbai.errors import KbaiError
from kbai.ratelimit import LoginRefused, LoginThrottle
from kbai.store.models import LoginSession, Tenant, User


@dataclass(frozen=True)
class SessionInfo:
    session_id: int
    user_id: int
    tenant_id: int
    tenant_name: str
    email: str
    csrf_token: str

    def csrf_ok(self, presented: str | None) -> bool:
        return same_secret(presented, self.csrf_token)


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


class SessionService:
    def __init__(self, access: AccessService, ttl_seconds: int, throttle: LoginThrottle | None = None) -> None:
        self.access = access
        self.db = access.db
        self.clock = access.clock
        self.ttl = timedelta(seconds=ttl_seconds)
        self.throttle = throttle

    def login(self, email: str, password: str, ip: str | None) -> tuple[str, SessionInfo]:
        """Check the password and open a new session. Returns (cookie value, session).

        With a throttle, the attempt is reserved before the password is checked (429 when the address,
        or an unfamiliar address of an account under attack, has to wait) and given back unless it
        failed, so parallel guesses cannot slip past the limits.
        """
        if self.throttle is None:
            return self._login(email, password, ip)
        attempt = self.throttle.reserve(email if isinstance(email, str) else "", ip or "unknown")
        if isinstance(attempt, LoginRefused):
            spec = errors.LOGIN_RATE_LIMITED if attempt.why == "address" else errors.LOGIN_ACCOUNT_THROTTLED
            raise KbaiError(spec, retry_after=attempt.retry_after)
        try:
            result = self._login(email, password, ip)
        except KbaiError as err:
            if err.spec is not errors.INVALID_CREDENTIALS:
                self.throttle.give_back(attempt, signed_in=False)
            raise
        except BaseException:
            self.throttle.give_back(attempt, signed_in=False)  # e.g. the database is down: no guess was made
            raise
        self.throttle.give_back(attempt, signed_in=True)
        return result

    def _login(self, email: str, password: str, ip: str | None) -> tuple[str, SessionInfo]:
        user = self.access.authenticate(email, password)
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            # The password may have been reset, or the user deactivated, since it was checked: both end
            # every session in their own transaction, so opening one now would undo them.
            fresh = s.get(User, user.id, with_for_update=True)
            if fresh is None or not fresh.active or fresh.password_hash != user.password_hash:
                raise KbaiError(errors.INVALID_CREDENTIALS)
            row = LoginSession(digest=_digest(cookie), user_id=user.id, csrf_token=csrf, created_at=now,
                               expires_at=now + self.ttl, ip=ip)
            s.add(row)
            s.flush()
            tenant_name = s.scalar(select(Tenant.name).where(Tenant.id == user.tenant_id)) or ""
            actor = Actor(kind="user", user_id=user.id, tenant_id=user.tenant_id, email=user.email, ip=ip)
            audit.record(s, actor, "session.login", at=now, target_type="user", target_id=user.id)
            info = SessionInfo(row.id, user.id, user.tenant_id, tenant_name, user.email, csrf)
        return cookie, info

    def resolve(self, cookie: str | None) -> SessionInfo | None:
        """The live session behind a cookie, or None (unknown, expired, or its user deactivated)."""
        if not cookie or len(cookie) > 200:
            return None
        now = self.clock.now()
        with self.db.read() as s:
            row = s.execute(
                select(LoginSession, User, Tenant.name)
                .join(User, User.id == LoginSession.user_id)
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(LoginSession.digest == _digest(cookie))
            ).first()
        if row is None:
            return None
        sess, user, tenant_name = row
        if sess.expires_at <= now or not user.active:
            return None
        return SessionInfo(sess.id, user.id, user.tenant_id, tenant_name, user.email, sess.csrf_token)

    def logout(self, info: SessionInfo, ip: str | None) -> None:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            s.execute(delete(LoginSession).where(LoginSession.id == info.session_id))
            actor = Actor(kind="user", user_id=info.user_id, tenant_id=info.tenant_id, email=info.email, ip=ip)
            audit.record(s, actor, "session.logout", at=now, target_type="user", target_id=info.user_id)

    def end_all(self, user_id: int) -> None:
        with self.db.write() as s:
            s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))

"""Interactive login sessions, kept server-side so logout and deactivation end them at once.

The cookie carries 32 random bytes; the database holds only their SHA-256. Every login makes a
new session id (no fixation), and each session has its own CSRF token for cookie-authenticated
writes.

A session can carry one *flash*: a message for the next page, set by a form's POST and shown once by
the page it redirects to (post/redirect/get, so a reload never submits the form again). It may hold
a token that was just created, so it is sealed with AES-GCM under a key derived from the cookie
(HMAC-SHA256 of the cookie; the database keeps only the cookie's SHA-256): what is stored is useless
without the browser's cookie. Taking it clears it, exactly once, and it is ignored after
``FLASH_TTL``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select, update

from kbai import errors
from kbai.access.service import AccessService
from kbai.clock import utc_seconds
from kbai.compare import same_secret
from kbai.errors import KbaiError
from kbai.ratelimit import LoginRefused, LoginThrottle
from kbai.store import audit
from kbai.store.audit import Actor
from kbai.store.models import LoginSession, Person, Tenant, User


@dataclass(frozen=True)
class SessionInfo:
    session_id: int
    user_id: int
    tenant_id: int
    tenant_name: str
    email: str
    csrf_token: str
    tenant_external_id: str | None = None
    has_flash: bool = False
    person_id: int | None = None

    def csrf_ok(self, presented: str | None) -> bool:
        return same_secret(presented, self.csrf_token)


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


FLASH_TTL = timedelta(minutes=10)
_FLASH_KEY_LABEL = b"kbai session flash v1"


def _flash_key(cookie: str) -> bytes:
    """A 256-bit key only the cookie's holder can derive (the database stores SHA-256 of the cookie, not this)."""
    return hmac.new(cookie.encode("utf-8", "surrogateescape"), _FLASH_KEY_LABEL, hashlib.sha256).digest()


class SessionService:
    def __init__(
        self,
        access: AccessService,
        ttl_seconds: int,
        throttle: LoginThrottle | None = None,
        *,
        password_login: bool = True,
        password_login_advice: str = "",
    ) -> None:
        self.access = access
        self.db = access.db
        self.clock = access.clock
        self.ttl = timedelta(seconds=ttl_seconds)
        self.password_login = password_login
        self.password_login_advice = password_login_advice

        self.throttle = throttle

    def login(
        self, email: str, password: str, ip: str | None, tenant: str | int | None = None
    ) -> tuple[str, SessionInfo]:
        """Check the password and open a new session in ``tenant`` (id, name or external id; default: the
        membership used last). Returns (cookie value, session).

        With a throttle, the attempt is reserved before the password is checked (429 when the address,
        or an unfamiliar address of an account under attack, has to wait) and given back unless it
        failed, so parallel guesses cannot slip past the limits.
        """
        if not self.password_login:  # KBAI_PASSWORD_LOGIN=false: no password is even checked
            raise KbaiError(errors.PASSWORD_LOGIN_DISABLED, advice=self.password_login_advice)
        return self._throttled(email, ip, lambda: self._login(email, password, ip, tenant))

    def accept_invitation(self, secret: str, password: str, ip: str | None) -> tuple[str, SessionInfo]:
        """Use an invitation (a new person sets ``password``; an existing one proves theirs, under the same
        failure limits as a login) and open a session in its tenant."""
        found = self.access.invitation(secret)
        if not self.password_login:  # KBAI_PASSWORD_LOGIN=false: no password is set or checked here either
            raise KbaiError(errors.PASSWORD_LOGIN_DISABLED, advice=self.password_login_advice)

        def accept() -> tuple[str, SessionInfo]:
            accepted = self.access.accept_invitation(secret, password)
            return self.open(accepted.user_id, ip, details={"via": "invitation"})

        if found.sets_password:
            return accept()
        return self._throttled(found.email, ip, accept)

    def _throttled(
        self, email: object, ip: str | None, attempt_login: Callable[[], tuple[str, SessionInfo]]
    ) -> tuple[str, SessionInfo]:
        if self.throttle is None:
            return attempt_login()
        attempt = self.throttle.reserve(email if isinstance(email, str) else "", ip or "unknown")
        if isinstance(attempt, LoginRefused):
            spec = errors.LOGIN_RATE_LIMITED if attempt.why == "address" else errors.LOGIN_ACCOUNT_THROTTLED
            raise KbaiError(spec, retry_after=attempt.retry_after)
        try:
            result = attempt_login()
        except KbaiError as err:
            if err.spec is not errors.INVALID_CREDENTIALS:
                self.throttle.give_back(attempt, signed_in=False)
            raise
        except BaseException:
            self.throttle.give_back(attempt, signed_in=False)  # e.g. the database is down: no guess was made
            raise
        self.throttle.give_back(attempt, signed_in=True)
        return result

    def _login(self, email: str, password: str, ip: str | None, tenant: str | int | None) -> tuple[str, SessionInfo]:
        person = self.access.authenticate_person(email, password)
        user = self._membership_for(person.id, tenant)
        return self.open(user.id, ip, expect_password_hash=person.password_hash)

    def _membership_for(self, person_id: int, tenant: str | int | None) -> User:
        """The person's active membership to log into; a missing one answers as a wrong password does."""
        if tenant is not None:
            if isinstance(tenant, bool) or not isinstance(tenant, (str, int)):
                raise KbaiError(errors.INVALID_CREDENTIALS)
            user = self.access.find_membership(person_id, tenant)
        else:
            with self.db.read() as s:
                person = s.get(Person, person_id)
                user = None if person is None else self.access._membership(s, person, active_only=True)
        if user is None:
            raise KbaiError(errors.INVALID_CREDENTIALS)
        return user

    def switch(self, info: SessionInfo, cookie: str, tenant: str | int, ip: str | None) -> tuple[str, SessionInfo]:
        """Move a session to another of its person's tenants: a new session (new cookie, new CSRF token) there,
        and the old one ended, in one transaction. NOT_A_MEMBER when the person is not an active member of
        ``tenant`` (the same answer whether such a tenant exists or not)."""
        if (
            isinstance(tenant, bool)
            or not isinstance(tenant, (str, int))
            or (isinstance(tenant, str) and not 1 <= len(tenant.strip()) <= 200)
        ):
            raise KbaiError(errors.VALIDATION, detail="tenant must be a tenant id, name or external id.")
        assert info.person_id is not None
        user = self.access.find_membership(info.person_id, tenant)
        if user is None:
            raise KbaiError(errors.NOT_A_MEMBER)
        return self.open(
            user.id,
            ip,
            details={"via": "switch", "from_tenant_id": info.tenant_id},
            replaces=info.session_id,
            action="session.switch",
        )

    def open(
        self,
        user_id: int,
        ip: str | None,
        details: dict[str, Any] | None = None,
        *,
        expect_password_hash: str | None = None,
        replaces: int | None = None,
        action: str = "session.login",
    ) -> tuple[str, SessionInfo]:
        """A new session for a user whose login was checked (password here, or a sign-in by ``kbai.identity``)."""
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            # The password may have been reset, or the user deactivated, since it was checked: both end
            # every session in their own transaction, so opening one now would undo them.
            user = s.get(User, user_id, with_for_update=True)
            person = None if user is None else s.get(Person, user.person_id, with_for_update=True)
            if (
                user is None
                or person is None
                or not user.active
                or (expect_password_hash is not None and person.password_hash != expect_password_hash)
            ):
                raise KbaiError(errors.INVALID_CREDENTIALS)
            if replaces is not None:  # a switch: the old session ends as the new one starts (gone already: refused)
                # A DELETE's result is a CursorResult (it has rowcount); Session.execute is typed as the base Result.
                gone = s.execute(delete(LoginSession).where(LoginSession.id == replaces)).rowcount  # type: ignore[attr-defined]
                if not gone:
                    raise KbaiError(errors.NOT_AUTHENTICATED)
            tenant = s.get(Tenant, user.tenant_id)
            assert tenant is not None
            person.last_tenant_id = tenant.id
            row = LoginSession(
                digest=_digest(cookie),
                user_id=user.id,
                csrf_token=csrf,
                created_at=now,
                expires_at=now + self.ttl,
                ip=ip,
            )
            s.add(row)
            s.flush()
            actor = Actor(kind="user", user_id=user.id, tenant_id=user.tenant_id, email=person.email, ip=ip)
            audit.record(s, actor, action, at=now, target_type="user", target_id=user.id, details=details)
            info = SessionInfo(
                row.id,
                user.id,
                user.tenant_id,
                tenant.name,
                person.email,
                csrf,
                tenant.external_id,
                person_id=person.id,
            )
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
        return SessionInfo(
            sess.id,
            user.id,
            user.tenant_id,
            tenant_name,
            user.email,
            sess.csrf_token,
            tenant_external_id,
            has_flash=sess.flash is not None,
            person_id=user.person_id,
        )

    def put_flash(self, info: SessionInfo, cookie: str, payload: dict[str, Any]) -> None:
        """Keep ``payload`` (JSON-able) for the session's next page, sealed under the cookie's key."""
        body = json.dumps({"at": utc_seconds(self.clock.now()).isoformat(), "payload": payload}).encode()
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(_flash_key(cookie)).encrypt(nonce, body, str(info.session_id).encode())
        with self.db.write() as s:
            s.execute(
                update(LoginSession)
                .where(LoginSession.id == info.session_id)
                .values(flash=base64.urlsafe_b64encode(nonce + sealed).decode())
            )

    def take_flash(self, info: SessionInfo, cookie: str) -> dict[str, Any] | None:
        """The session's flash, cleared as it is read (of two requests racing for it, one gets it)."""
        if not info.has_flash:
            return None
        with self.db.write() as s:
            stored = s.scalar(select(LoginSession.flash).where(LoginSession.id == info.session_id))
            if stored is None:
                return None
            taken = s.execute(
                update(LoginSession)
                .where(LoginSession.id == info.session_id, LoginSession.flash == stored)
                .values(flash=None)
            )
            if not getattr(taken, "rowcount", 0):
                return None
        try:
            raw = base64.urlsafe_b64decode(stored.encode())
            body = json.loads(AESGCM(_flash_key(cookie)).decrypt(raw[:12], raw[12:], str(info.session_id).encode()))
            at = datetime.fromisoformat(body["at"]).astimezone(UTC)
        except (binascii.Error, InvalidTag, ValueError, KeyError, TypeError):
            return None
        if self.clock.now() - at > FLASH_TTL:
            return None
        payload = body.get("payload")
        return payload if isinstance(payload, dict) else None

    def logout(self, info: SessionInfo, ip: str | None) -> None:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            s.execute(delete(LoginSession).where(LoginSession.id == info.session_id))
            actor = Actor(kind="user", user_id=info.user_id, tenant_id=info.tenant_id, email=info.email, ip=ip)
            audit.record(s, actor, "session.logout", at=now, target_type="user", target_id=info.user_id)

    def end_all(self, user_id: int) -> None:
        with self.db.write() as s:
            s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))

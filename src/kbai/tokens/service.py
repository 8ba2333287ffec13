"""The token lifecycle: create, list, revoke, rotate, and the storage side of verification.

Every change to one user's tokens runs in a write transaction that first locks that user
(``SELECT … FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite), so the active-token limit
and name uniqueness hold under any number of concurrent requests, threads or processes.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from kbai import errors
from kbai import tokenformat as fmt
from kbai.access.catalog import MANAGE_SERVICE_TOKENS, MANAGE_TOKENS, REVIEW_TOKENS, Catalog
from kbai.access.service import ADMIN, permissions_from, permissions_of, require, trusted_in
from kbai.clock import Clock, iso, utc_seconds
from kbai.errors import KbaiError
from kbai.store import Database, audit
from kbai.store.audit import Actor
from kbai.store.models import Tenant, Token, User
from kbai.store.queries import ADMIN_MARK, HELD_SEPARATOR, TOKEN_RECORD
from kbai.tokens.policy import check_lifetime, lifetime_within, policy_of
from kbai.tokens.restrictions import (
    Quota,
    RateLimit,
    clean_allowlist,
    clean_description,
    clean_quota,
    clean_rate_limit,
    networks,
    period_start,
)
from kbai.tokens.verify import Lookup, TokenRecord, Verification, verify
from kbai.validate import clean_name

MAX_LIFETIME_DAYS = 3650
ROTATED_SUFFIX = " (rotated)"  # revoked_by of a token a rotation stops
MAX_GRACE_SECONDS = 7 * 24 * 3600
EXPIRY_PRESETS_DAYS = (7, 30, 60, 90)
RECOMMENDED_EXPIRY_DAYS = 90
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Digests per statement: a batch of thousands of leaked tokens costs one lookup, not one per token.
DIGEST_CHUNK = 5000


@dataclass(frozen=True)
class TokenView:
    """A token as its owner sees it: everything but the secret."""

    id: int
    user_id: int | None  # None: a service token (owned by the tenant)
    tenant_id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    status: str
    rotated_from_id: int | None
    description: str | None = None
    allowed_ips: list[str] | None = None
    self_rotate: bool = False
    paused_at: datetime | None = None
    created_by_user_id: int | None = None  # a service token's creator (or owner before a hand-over)
    rate_limit: RateLimit | None = None
    # The quota as stored: ``remaining`` is what no instance has taken yet (kbai.tokens.limits adds this
    # instance's unspent share for the exact figure on one instance).
    quota: Quota | None = None

    @property
    def service(self) -> bool:
        return self.user_id is None


@dataclass(frozen=True)
class FoundToken:
    """A stored token found by its digest (leak reports, scans), with its owner."""

    digest: str
    view: TokenView
    owner_email: str
    owner_active: bool
    # Active until this call revoked it (always False for a plain lookup).
    revoked_now: bool


def held_pairs(held: str | None) -> list[tuple[str | None, str | None]]:
    """TOKEN_RECORD's HELD value as the (role kind, permission) pairs :func:`permissions_from` reads."""
    if not held:
        return []
    return [(ADMIN, None) if item == ADMIN_MARK else (None, item) for item in held.split(HELD_SEPARATOR)]


def status_of(token: Token, now: datetime) -> str:
    if token.revoked_at is not None and token.revoked_at <= now:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    if token.paused_at is not None:
        return "paused"
    return "active"


def _active_clause(now: datetime) -> ColumnElement[bool]:
    return and_(
        or_(Token.revoked_at.is_(None), Token.revoked_at > now),
        or_(Token.expires_at.is_(None), Token.expires_at > now),
    )


def _counted_clause(now: datetime) -> ColumnElement[bool]:
    """Tokens that count toward the active-token limit: active, and not a predecessor in its rotation grace
    period (that one already has a scheduled stop; its successor holds the slot, as Stripe's roll does)."""
    return and_(Token.revoked_at.is_(None), or_(Token.expires_at.is_(None), Token.expires_at > now))


def resolve_expiry(now: datetime, expires_in_days: object = None, expires_at: object = None) -> datetime | None:
    """The expiry time for a new token. Neither given: no expiration. A bare date: the end of that day, UTC."""
    if expires_in_days is not None and expires_at is not None:
        raise KbaiError(errors.VALIDATION, detail="Give expires_in_days or expires_at, not both.")
    if expires_in_days is not None:
        if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, int):
            raise KbaiError(errors.VALIDATION, detail="expires_in_days must be a whole number of days.")
        if not 1 <= expires_in_days <= MAX_LIFETIME_DAYS:
            raise KbaiError(
                errors.VALIDATION,
                detail=f"expires_in_days must be between 1 and {MAX_LIFETIME_DAYS}, or null for no expiration.",
            )
        return utc_seconds(now + timedelta(days=expires_in_days))
    if expires_at is None:
        return None
    when = _parse_when(expires_at)
    if when <= now:
        raise KbaiError(
            errors.VALIDATION, detail="expires_at is in the past; pick a future date, or null for no expiration."
        )
    if when > now + timedelta(days=MAX_LIFETIME_DAYS):
        raise KbaiError(errors.VALIDATION, detail=f"expires_at is more than {MAX_LIFETIME_DAYS} days away.")
    return when


def _parse_when(value: object) -> datetime:
    bad = KbaiError(
        errors.VALIDATION,
        detail="expires_at must be a date (2027-03-31) or an ISO 8601 time with a zone (2027-03-31T12:00:00Z).",
    )
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise bad
        try:
            return utc_seconds(value)
        except OverflowError:
            raise bad from None
    if isinstance(value, date):
        return datetime.combine(value, time(23, 59, 59), tzinfo=UTC)
    if not isinstance(value, str) or len(value) > 40:
        raise bad
    text = value.strip()
    try:
        if _DATE_RE.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), time(23, 59, 59), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise bad from None
    if parsed.tzinfo is None:
        raise bad
    try:
        return utc_seconds(parsed)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past the last representable UTC time
        raise bad from None


class TokenService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        catalog: Catalog,
        *,
        default_limit: int = 10,
        default_service_limit: int = 25,
        support_email: str = "support@keebai.com",
    ) -> None:
        self.db = db
        self.clock = clock
        self.catalog = catalog
        self.default_limit = default_limit
        self.default_service_limit = default_service_limit
        self.support_email = support_email
        # Called with (digests, user_ids) after a commit that changes what verification would say.
        self.listeners: list[Callable[[set[str], set[int]], None]] = []
        # Where verification finds records: the database, or a cache in front of it (kbai.cache).
        self.lookup: Lookup = self.load_record
        # A lookup that never loads: (True, record) on a fresh cache hit, (False, None) otherwise.
        self.peek: Callable[[str], tuple[bool, TokenRecord | None]] = lambda _digest: (False, None)

    # ---- verification --------------------------------------------------------------------
    def load_record(self, token_digest: str) -> TokenRecord | None:
        """The stored token with that digest and its owner's current permissions: one statement."""
        rows = self.db.read_once(TOKEN_RECORD, {"digest": token_digest})
        if not rows:
            return None
        (
            token_id,
            tenant_id,
            tenant_name,
            user_id,
            email,
            prefix,
            name,
            scopes,
            created_at,
            expires_at,
            revoked_at,
            active,
            held,
            tenant_external_id,
            paused_at,
            allowed_ips,
            revoked_by,
            person_id,
            user_external_id,
            ceiling,
            rate_requests,
            rate_per,
            quota_total,
            quota_refill,
            quota_version,
        ) = rows[0]
        allowed = tuple(allowed_ips) if allowed_ips else None
        service = user_id is None
        if service:
            # Owned by the tenant: no person's account bounds it, the tenant's ceiling does (None: its own scopes).
            active = True
            bound = frozenset(scopes) if ceiling is None else frozenset(ceiling) & self.catalog.keys
        else:
            # Inactive owners hold nothing (as permissions_of says).
            bound = permissions_from(held_pairs(held), self.catalog) if active else frozenset()
        return TokenRecord(
            token_id=token_id,
            tenant_id=tenant_id,
            tenant_name=tenant_name,
            user_id=user_id,
            email=email or "",
            prefix=prefix,
            name=name,
            # A scope that needs a session (stored before that rule) is never one the token acts with.
            scopes=frozenset(scopes) - self.catalog.session_only,
            created_at=created_at,
            expires_at=expires_at,
            revoked_at=revoked_at,
            owner_active=bool(active),
            owner_permissions=bound,
            tenant_external_id=tenant_external_id,
            paused=paused_at is not None,
            allowed_networks=networks(allowed) if allowed is not None else None,
            allowed_ips=allowed,
            rotated_out=revoked_by is not None and revoked_by.endswith(ROTATED_SUFFIX),
            person_id=person_id or 0,
            user_external_id=user_external_id,
            service=service,
            rate_limit=RateLimit(rate_requests, rate_per) if rate_requests is not None and rate_per else None,
            quota=quota_total is not None,
            quota_refill=quota_refill,
            quota_version=quota_version or 0,
        )

    def verify(
        self,
        presented: object,
        required: Iterable[str] = (),
        *,
        lookup: Lookup | None = None,
        client_ip: str | None = None,
    ) -> Verification:
        return verify(presented, lookup or self.lookup, self.clock.now(), required, client_ip)

    def verify_warm(
        self, presented: object, required: Iterable[str] = (), *, client_ip: str | None = None
    ) -> Verification | None:
        """:meth:`verify` when the answer needs no I/O (a malformed token, a fresh cache entry), else
        None: safe on an event loop, which then sends only the rest to a thread."""
        peek = self.peek

        def cached(token_digest: str) -> TokenRecord | None:
            hit, record = peek(token_digest)
            if not hit:
                raise _NotCached
            return record

        try:
            return verify(presented, cached, self.clock.now(), required, client_ip)
        except _NotCached:
            return None

    # ---- the owner's operations ----------------------------------------------------------
    def limit_for(self, session: Session, user: User) -> int:
        if user.max_active_tokens is not None:
            return user.max_active_tokens
        tenant_limit = session.scalar(select(Tenant.max_active_tokens).where(Tenant.id == user.tenant_id))
        return tenant_limit if tenant_limit is not None else self.default_limit

    def allowance(self, user_id: int) -> tuple[int, int]:
        """(active tokens, limit) for a user: what the form shows as "3 of 10 active tokens". A token in its
        rotation grace period is not counted (its successor is)."""
        now = self.clock.now()
        with self.db.read() as s:
            user = s.get(User, user_id)
            if user is None:
                raise KbaiError(errors.NOT_FOUND, what="User")
            active = s.scalar(select(func.count(Token.id)).where(Token.user_id == user_id, _counted_clause(now)))
            return int(active or 0), self.limit_for(s, user)

    def counts_by_user(self, tenant_id: int) -> dict[int, int]:
        """Active tokens (as the limit counts them) of each user of a tenant who has any: user id -> count."""
        now = self.clock.now()
        with self.db.read() as s:
            rows = s.execute(
                select(Token.user_id, func.count(Token.id))
                .where(Token.tenant_id == tenant_id, Token.user_id.is_not(None), _counted_clause(now))
                .group_by(Token.user_id)
            ).all()
        return {int(user_id): int(count) for user_id, count in rows if user_id is not None}

    def _admit(
        self,
        s: Session,
        tenant_id: int,
        held: frozenset[str],
        wanted: builtins.list[str],
        now: datetime,
        expiry: datetime | None,
        allowlist: builtins.list[str] | None,
    ) -> None:
        """Refuse a new token (personal or service) that the tenant's policy or its creator's permissions forbid."""
        policy = policy_of(s, tenant_id)
        check_lifetime(policy, now, expiry)
        if policy.require_allowlist and allowlist is None:
            raise KbaiError(errors.POLICY_ALLOWLIST_REQUIRED)
        for scope in wanted:
            if scope not in held:
                raise KbaiError(errors.UNHELD_SCOPE, scope=scope)
            if scope in self.catalog.session_only:
                raise KbaiError(errors.SESSION_ONLY_SCOPE, scope=scope, label=self.catalog.label(scope))

    def create(
        self,
        actor: Actor,
        name: object,
        scopes: object,
        *,
        expires_in_days: object = None,
        expires_at: object = None,
        description: object = None,
        allowed_ips: object = None,
        self_rotate: object = False,
        rate_limit: object = None,
        quota: object = None,
    ) -> tuple[TokenView, str]:
        """Mint a token for ``actor`` (an interactive user). Returns the view and the plaintext, once."""
        if actor.kind != "user" or actor.user_id is None:
            raise KbaiError(errors.SESSION_REQUIRED, action="create tokens")
        clean = clean_name(name, "name")
        wanted = self._clean_scopes(scopes)
        note = clean_description(description)
        allowlist = clean_allowlist(allowed_ips)
        rate, budget = clean_rate_limit(rate_limit), clean_quota(quota)
        if not isinstance(self_rotate, bool):
            raise KbaiError(errors.VALIDATION, detail="self_rotate must be true or false.")
        now = utc_seconds(self.clock.now())
        expiry = resolve_expiry(now, expires_in_days, expires_at)
        with self.db.write() as s:
            user = self._lock_user(s, actor.user_id)
            held = permissions_of(s, user, self.catalog)
            if MANAGE_TOKENS not in held:
                raise KbaiError(errors.NO_TOKEN_PERMISSION)
            self._admit(s, user.tenant_id, held, wanted, now, expiry, allowlist)
            active = list(s.scalars(select(Token).where(Token.user_id == user.id, _active_clause(now))))
            if any(t.name.casefold() == clean.casefold() for t in active):
                raise KbaiError(errors.NAME_TAKEN, name=clean)
            limit = self.limit_for(s, user)
            counted = sum(1 for t in active if t.revoked_at is None)
            if counted >= limit:
                raise KbaiError(errors.LIMIT_REACHED, active=counted, limit=limit, support=self.support_email)
            token, plaintext = self._mint(
                s,
                user,
                clean,
                wanted,
                now,
                expiry,
                rotated_from=None,
                description=note,
                allowed_ips=allowlist,
                self_rotate=self_rotate,
                rate_limit=rate,
                quota=budget,
            )
            restrictions: dict[str, Any] = _limits_audit(rate, budget)
            if allowlist is not None:
                restrictions["allowed_ips"] = allowlist
            if self_rotate:
                restrictions["self_rotate"] = True
            audit.record(
                s,
                actor,
                "token.create",
                at=now,
                target_type="token",
                target_id=token.id,
                tenant_id=user.tenant_id,
                details={
                    "name": clean,
                    "prefix": token.prefix,
                    "scopes": wanted,
                    "expires_at": iso(expiry),
                    **restrictions,
                },
            )
            view = self._view(token, now)
        return view, plaintext

    def list(self, user_id: int, *, before_id: int | None = None, limit: int = 100) -> builtins.list[TokenView]:
        """Every token the user created, newest first (all statuses)."""
        now = self.clock.now()
        with self.db.read() as s:
            query = select(Token).where(Token.user_id == user_id).order_by(Token.id.desc()).limit(limit)
            if before_id is not None:
                query = query.where(Token.id < before_id)
            return [self._view(t, now) for t in s.scalars(query)]

    def get(self, actor: Actor, token_id: int) -> TokenView:
        now = self.clock.now()
        with self.db.read() as s:
            return self._view(self._token_in_scope(s, actor, token_id, "read"), now)

    def revoke(self, actor: Actor, token_id: int) -> TokenView:
        """Revoke now. Idempotent: revoking a revoked token changes nothing and audits nothing."""
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            token = self._token_in_scope(s, actor, token_id, "revoke another token")
            # Support (and leak reports) must be able to revoke a deactivated user's tokens too.
            self._lock_owner(s, token)
            s.refresh(token)
            if token.revoked_at is None or token.revoked_at > now:
                token.revoked_at = now
                token.revoked_by = actor.label[:100]
                audit.record(
                    s,
                    actor,
                    "token.revoke",
                    at=now,
                    target_type="token",
                    target_id=token.id,
                    tenant_id=token.tenant_id,
                    details={"name": token.name, "prefix": token.prefix},
                )
            view = self._view(token, now)
            changed = {token.digest}
        self._notify(changed, set())
        return view

    # ---- pause, resume, change ------------------------------------------------------------
    def pause(self, actor: Actor, token_id: int) -> TokenView:
        """Refuse the token on every instance from the next request until it is resumed; it stays counted
        toward the limit and keeps its plaintext. Its owner (with a session) or a reviewer of the tenant's
        tokens may pause it. Idempotent: pausing a paused token changes nothing and audits nothing."""
        return self._set_paused(actor, token_id, paused=True)

    def resume(self, actor: Actor, token_id: int) -> TokenView:
        """Undo :meth:`pause`. Needs a session (a token never re-enables one). A revoked or expired token
        stays as it is (409); resuming an active token changes nothing."""
        if actor.kind == "token":
            raise KbaiError(errors.SESSION_REQUIRED, action="resume a token")
        return self._set_paused(actor, token_id, paused=False)

    def pause_service(self, actor: Actor, token_id: int) -> TokenView:
        """:meth:`pause` for a service token of the actor's tenant, by a session holding
        developer.manage_service_tokens (404 for any other id)."""
        return self._set_paused(actor, token_id, paused=True, service=True)

    def resume_service(self, actor: Actor, token_id: int) -> TokenView:
        """:meth:`resume` for a service token of the actor's tenant (as :meth:`pause_service`)."""
        return self._set_paused(actor, token_id, paused=False, service=True)

    def _set_paused(self, actor: Actor, token_id: int, *, paused: bool, service: bool = False) -> TokenView:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            if service:
                user, _held = self._service_holder(
                    s, actor, "pause service tokens" if paused else "resume service tokens"
                )
                token = self._service_token(s, user, token_id)
            else:
                token = self._token_to_change(s, actor, token_id, "pause a token")
            self._lock_owner(s, token)
            s.refresh(token)
            status = status_of(token, now)
            if paused and status not in ("active", "paused"):
                raise KbaiError(errors.NOT_PAUSABLE, status=status)
            if not paused and status not in ("active", "paused"):
                advice = (
                    " A revoked token never comes back: create a new one."
                    if status == "revoked"
                    else " Create a new token under System Settings > API Keys."
                )
                raise KbaiError(errors.NOT_RESUMABLE, status=status, advice=advice)
            changed: set[str] = set()
            if paused and token.paused_at is None:
                token.paused_at = now
                changed.add(token.digest)
                audit.record(
                    s,
                    actor,
                    "token.pause",
                    at=now,
                    target_type="token",
                    target_id=token.id,
                    tenant_id=token.tenant_id,
                    details={"name": token.name, "prefix": token.prefix},
                )
            elif not paused and token.paused_at is not None:
                token.paused_at = None
                changed.add(token.digest)
                audit.record(
                    s,
                    actor,
                    "token.resume",
                    at=now,
                    target_type="token",
                    target_id=token.id,
                    tenant_id=token.tenant_id,
                    details={"name": token.name, "prefix": token.prefix},
                )
            view = self._view(token, now)
        self._notify(changed, set())
        return view

    def update(self, actor: Actor, token_id: int, changes: dict[str, object]) -> TokenView:
        """Change what may change after creation: ``name``, ``description``, ``allowed_ips``, an earlier
        expiry (``expires_in_days`` or ``expires_at``), and fewer ``scopes``. Only the keys given change.
        The owner's session only. Audited; every instance hears of it at once."""
        if actor.kind != "user" or actor.user_id is None:
            raise KbaiError(errors.SESSION_REQUIRED, action="change tokens")
        now = utc_seconds(self.clock.now())
        clean: dict[str, Any] = {}
        if "name" in changes:
            clean["name"] = clean_name(changes["name"], "name")
        if "description" in changes:
            clean["description"] = clean_description(changes["description"])
        if "allowed_ips" in changes:
            clean["allowed_ips"] = clean_allowlist(changes["allowed_ips"])
        if "scopes" in changes:
            clean["scopes"] = self._clean_scopes(changes["scopes"])
        if "rate_limit" in changes:
            clean["rate_limit"] = clean_rate_limit(changes["rate_limit"])
        if "quota" in changes:
            clean["quota"] = clean_quota(changes["quota"])
        expiry_given = "expires_in_days" in changes or "expires_at" in changes
        new_expiry: datetime | None = None
        if expiry_given:
            new_expiry = resolve_expiry(now, changes.get("expires_in_days"), changes.get("expires_at"))
        with self.db.write() as s:
            token = self._editable(s, actor, token_id)
            self._lock_owner(s, token)
            s.refresh(token)
            status = status_of(token, now)
            if status not in ("active", "paused"):
                raise KbaiError(errors.NOT_EDITABLE, status=status)
            diff: dict[str, Any] = {}
            if "name" in clean and clean["name"] != token.name:
                if any(
                    t.name.casefold() == clean["name"].casefold()
                    for t in s.scalars(
                        select(Token).where(
                            Token.tenant_id == token.tenant_id,
                            Token.user_id.is_(None) if token.user_id is None else Token.user_id == token.user_id,
                            Token.id != token.id,
                            _active_clause(now),
                        )
                    )
                ):
                    raise KbaiError(
                        errors.SERVICE_NAME_TAKEN if token.user_id is None else errors.NAME_TAKEN, name=clean["name"]
                    )
                diff["name"] = {"from": token.name, "to": clean["name"]}
                token.name = clean["name"]
            if "description" in clean and clean["description"] != token.description:
                diff["description"] = "changed" if clean["description"] is not None else "removed"
                token.description = clean["description"]
            if "allowed_ips" in clean and clean["allowed_ips"] != (token.allowed_ips or None):
                if clean["allowed_ips"] is None and policy_of(s, token.tenant_id).require_allowlist:
                    raise KbaiError(errors.POLICY_ALLOWLIST_REQUIRED)
                diff["allowed_ips"] = {"from": token.allowed_ips or None, "to": clean["allowed_ips"]}
                token.allowed_ips = clean["allowed_ips"]
            if "scopes" in clean and clean["scopes"] != list(token.scopes):
                for scope in clean["scopes"]:
                    if scope not in token.scopes:
                        raise KbaiError(errors.SCOPES_ONLY_SHRINK, scope=scope)
                diff["scopes"] = {"from": list(token.scopes), "to": clean["scopes"]}
                token.scopes = clean["scopes"]
            if expiry_given and new_expiry != token.expires_at:
                if new_expiry is None or (token.expires_at is not None and new_expiry > token.expires_at):
                    raise KbaiError(errors.EXPIRY_ONLY_SHORTER, current=iso(token.expires_at) or "never")
                diff["expires_at"] = {"from": iso(token.expires_at), "to": iso(new_expiry)}
                token.expires_at = new_expiry
            if "rate_limit" in clean and clean["rate_limit"] != _rate_of(token):
                before = _rate_of(token)
                diff["rate_limit"] = {"from": before.json() if before else None, "to": _json_of(clean["rate_limit"])}
                token.rate_limit_requests = clean["rate_limit"].requests if clean["rate_limit"] else None
                token.rate_limit_per = clean["rate_limit"].per if clean["rate_limit"] else None
            if "quota" in clean:
                # Set anew, even to the same figures: every instance drops the shares it took of the old quota.
                diff["quota"] = {"to": _json_of(clean["quota"])}
                _set_quota(token, clean["quota"], now)
                token.quota_version = (token.quota_version or 0) + 1
            changed: set[str] = set()
            if diff:
                changed.add(token.digest)
                audit.record(
                    s,
                    actor,
                    "token.update",
                    at=now,
                    target_type="token",
                    target_id=token.id,
                    tenant_id=token.tenant_id,
                    details={"name": token.name, "prefix": token.prefix, "changes": diff},
                )
            view = self._view(token, now)
        self._notify(changed, set())
        return view

    def rotate_self(self, actor: Actor, grace_period_seconds: object = 0) -> tuple[TokenView, str, TokenView]:
        """The calling token rotates itself (``POST /api/v1/tokens/self/rotate``): only a token created with
        ``self_rotate``, whose owner may still manage tokens. Same name, scopes and restrictions; the new
        lifetime is the old one, cut to the tenant's longest allowed lifetime (an automation cannot pick)."""
        if actor.kind != "token" or actor.token_id is None:
            raise KbaiError(errors.SELF_ROTATE_NEEDS_TOKEN)
        return self.rotate(actor, actor.token_id, grace_period_seconds, itself=True)

    def rotate(
        self,
        actor: Actor,
        token_id: int,
        grace_period_seconds: object = 0,
        *,
        expires_in_days: object = None,
        itself: bool = False,
        service: bool = False,
    ) -> tuple[TokenView, str, TokenView]:
        """A new token with the same name, scopes and lifetime (or ``expires_in_days``, when given); the old
        one stops after the grace period. The tenant's policy applies to the new token as on create.

        The old token, in its grace period, no longer counts toward the limit: the new one takes its slot,
        so rotating with an overlap works at the limit. A chain never holds more than two working tokens:
        rotating a token whose own predecessor is still in its grace period ends that grace at once, and a
        token that was rotated already cannot be rotated again (its successor is the one to rotate).

        ``service``: a service token of the actor's tenant, rotated by a session holding
        developer.manage_service_tokens; the new one is the tenant's too, the actor recorded as its creator.

        Returns (new view, new plaintext, old view).
        """
        if not itself and (actor.kind != "user" or actor.user_id is None):
            raise KbaiError(errors.SESSION_REQUIRED, action="rotate service tokens" if service else "rotate tokens")
        if (
            isinstance(grace_period_seconds, bool)
            or not isinstance(grace_period_seconds, int)
            or not 0 <= grace_period_seconds <= MAX_GRACE_SECONDS
        ):
            raise KbaiError(
                errors.VALIDATION, detail=f"grace_period_seconds must be a whole number from 0 to {MAX_GRACE_SECONDS}."
            )
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            if service:
                user, _held = self._service_holder(s, actor, "rotate service tokens")
                old = self._service_token(s, user, token_id)
                self._lock_tenant(s, old.tenant_id)
                s.refresh(old)
            else:
                old = self._token_in_scope(s, actor, token_id, "rotate tokens")
                if old.user_id is None:
                    raise KbaiError(
                        errors.SERVICE_TOKEN_NOT_PERSONAL,
                        action="rotate itself; rotate it with POST /api/v1/service-tokens/{id}/rotate",
                    )
                user = self._lock_user(s, old.user_id)
                s.refresh(old)
                if itself and not old.self_rotate:
                    raise KbaiError(errors.SELF_ROTATE_NOT_ENABLED)
                if MANAGE_TOKENS not in permissions_of(s, user, self.catalog):
                    raise KbaiError(errors.NO_TOKEN_PERMISSION)
            # Read under the owner's lock, so of two concurrent rotations the second sees the first's successor.
            successor = s.scalar(select(func.min(Token.id)).where(Token.rotated_from_id == old.id))
            if successor is not None:
                raise KbaiError(errors.ALREADY_ROTATED, successor_id=successor)
            status = status_of(old, now)
            if status != "active":
                raise KbaiError(errors.NOT_ROTATABLE, status=status)
            expiry = None
            if expires_in_days is not None:
                expiry = resolve_expiry(now, expires_in_days)
            elif old.expires_at is not None:
                expiry = now + (old.expires_at - old.created_at)
            policy = policy_of(s, user.tenant_id)
            if itself:
                expiry = lifetime_within(policy, now, expiry)
            check_lifetime(policy, now, expiry, rotating=expires_in_days is None)
            # A scope that needs a session (given before that rule) is not carried over: the token never had it.
            scopes = [scope for scope in old.scopes if scope not in self.catalog.session_only]
            # The restrictions go with the name: a rotation never widens where or how the token works.
            new, plaintext = self._mint(
                s,
                user,
                old.name,
                scopes,
                now,
                expiry,
                rotated_from=old.id,
                description=old.description,
                allowed_ips=old.allowed_ips,
                self_rotate=bool(old.self_rotate),
                rate_limit=_rate_of(old),
                service=service,
            )
            # The quota goes on where it stands (a rotation never refills it), its period and alert with it.
            for column in QUOTA_COLUMNS:
                setattr(new, column, getattr(old, column))
            stop = now + timedelta(seconds=grace_period_seconds)
            if old.revoked_at is None or old.revoked_at > stop:
                old.revoked_at = stop
                old.revoked_by = f"{actor.label[:90]}{ROTATED_SUFFIX}"
            changed = {old.digest}
            ended_grace = None
            if old.rotated_from_id is not None:
                before = s.get(Token, old.rotated_from_id)
                if before is not None and before.revoked_at is not None and before.revoked_at > now:
                    before.revoked_at = now
                    ended_grace = before.id
                    changed.add(before.digest)
            audit.record(
                s,
                actor,
                "token.self_rotate" if itself else "service_token.rotate" if service else "token.rotate",
                at=now,
                target_type="token",
                target_id=new.id,
                tenant_id=user.tenant_id,
                details={
                    "name": old.name,
                    "from_id": old.id,
                    "from_prefix": old.prefix,
                    "to_id": new.id,
                    "to_prefix": new.prefix,
                    "old_stops_at": iso(old.revoked_at),
                    **({"ended_grace_of": ended_grace} if ended_grace is not None else {}),
                },
            )
            views = self._view(new, now), self._view(old, now)
        self._notify(changed, set())
        return views[0], plaintext, views[1]

    def rotated_to(self, token_ids: Iterable[int]) -> dict[int, int]:
        """For each of ``token_ids`` that was rotated: the id of the token that replaced it (one query)."""
        ids = sorted(set(token_ids))
        if not ids:
            return {}
        with self.db.read() as s:
            rows = s.execute(select(Token.rotated_from_id, Token.id).where(Token.rotated_from_id.in_(ids))).all()
        return {int(old): int(new) for old, new in rows if old is not None}  # never None: in_(ids)

    def revoke_matching(
        self,
        actor: Actor,
        *where: Any,
        reason: str,
        record: Callable[[Session, builtins.list[tuple[TokenView, str]], datetime], None] | None = None,
    ) -> builtins.list[TokenView]:
        """Revoke now every active token matching ``where`` (SQLAlchemy conditions on Token) under row locks,
        so of several callers racing for the same token exactly one revokes it. Each revocation is audited
        (``token.revoke`` with ``reason``); ``record`` then runs in the same transaction with the tokens
        revoked and their owners' emails (to notify them). Returns the tokens this call revoked.
        """
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            # Rows are locked in id order, like the usage flush, so the two can never deadlock; a row
            # another transaction revoked (or marked used) meanwhile is re-checked and left out.
            locked = list(
                s.scalars(select(Token.id).where(*where, _active_clause(now)).order_by(Token.id).with_for_update())
            )
            if not locked:
                return []
            ids = list(
                s.scalars(
                    update(Token)
                    .where(Token.id.in_(locked), _active_clause(now))
                    .values(revoked_at=now, revoked_by=actor.label[:100])
                    .returning(Token.id)
                    .execution_options(synchronize_session=False)
                )
            )
            if not ids:
                return []
            rows = s.execute(
                select(Token, User.email)
                .outerjoin(User, User.id == Token.user_id)  # service tokens too (no owner: "")
                .where(Token.id.in_(ids))
                .order_by(Token.id)
                .execution_options(populate_existing=True)
            ).all()
            revoked = [(self._view(t, now), email or "") for t, email in rows]
            for view, email in revoked:
                audit.record(
                    s,
                    actor,
                    "token.revoke",
                    at=now,
                    target_type="token",
                    target_id=view.id,
                    tenant_id=view.tenant_id,
                    details={"name": view.name, "prefix": view.prefix, "owner": email or None, "reason": reason},
                )
            if record is not None:
                record(s, revoked, now)
            changed = {t.digest for t, _ in rows}
        self._notify(changed, set())
        return [view for view, _ in revoked]

    # ---- tokens found outside (leak reports, scans) ---------------------------------------
    def revoke_found(
        self,
        actor: Actor,
        digests: Iterable[str],
        *,
        revoked_by: str,
        record: Callable[[Session, builtins.list[FoundToken], datetime], None] | None = None,
    ) -> dict[str, FoundToken]:
        """Revoke now every active token among ``digests`` (a leak): one transaction, one SELECT and one
        UPDATE per 5,000 digests. Tokens of any owner, even a deactivated one. ``record`` runs inside the
        transaction with every token found (to audit and notify); listeners then hear of each revoked one.
        """
        now = utc_seconds(self.clock.now())
        found: list[FoundToken] = []
        with self.db.write() as s:
            for chunk in _chunks(sorted(set(digests))):
                # Rows are locked in id order, like the usage flush, so the two can never deadlock.
                rows = s.execute(
                    select(Token, User.email, User.active)
                    .outerjoin(User, User.id == Token.user_id)  # service tokens too (no owner: NULL email)
                    .where(Token.digest.in_(chunk))
                    .order_by(Token.id)
                    .with_for_update(of=Token)
                ).all()
                active = [t.id for t, _, _ in rows if status_of(t, now) == "active"]
                revoked: set[int] = set()
                if active:
                    revoked = set(
                        s.scalars(
                            update(Token)
                            .where(Token.id.in_(active), _active_clause(now))
                            .values(revoked_at=now, revoked_by=revoked_by[:100])
                            .returning(Token.id)
                            .execution_options(synchronize_session=False)
                        )
                    )
                for token, email, owner_active in rows:
                    email = email or ""
                    view = self._view(token, now)
                    if token.id in revoked:  # the UPDATE bypassed the loaded row
                        view = replace(view, revoked_at=now, status="revoked")
                    found.append(FoundToken(token.digest, view, email, bool(owner_active), token.id in revoked))
            if record is not None and found:
                record(s, found, now)
        self._notify({f.digest for f in found if f.revoked_now}, set())
        return {f.digest: f for f in found}

    def find_by_digests(self, digests: Iterable[str]) -> dict[str, FoundToken]:
        """The stored tokens among ``digests`` (any status), by digest. Changes nothing."""
        now = self.clock.now()
        out: dict[str, FoundToken] = {}
        with self.db.read() as s:
            for chunk in _chunks(sorted(set(digests))):
                rows = s.execute(
                    select(Token, User.email, User.active)
                    .outerjoin(User, User.id == Token.user_id)  # service tokens too (no owner: NULL email)
                    .where(Token.digest.in_(chunk))
                ).all()
                for token, email, owner_active in rows:
                    out[token.digest] = FoundToken(
                        token.digest, self._view(token, now), email or "", bool(owner_active), False
                    )
        return out

    # ---- operator (support) --------------------------------------------------------------
    def list_for_support(
        self, *, user_email: str | None = None, tenant_name: str | None = None
    ) -> builtins.list[tuple[str, TokenView]]:
        now = self.clock.now()
        with self.db.read() as s:
            # Service tokens too (no owner: ""), unless a person's tokens are asked for.
            query = select(Token, User.email).outerjoin(User, User.id == Token.user_id).order_by(Token.id)
            if user_email is not None:
                # every membership of that person (tokens of each act in their own tenant)
                members = list(s.scalars(select(User.id).where(User.email == user_email.strip().lower())))
                if not members:
                    raise KbaiError(errors.NOT_FOUND, what=f"User '{user_email}'")
                query = query.where(Token.user_id.in_(members))
            if tenant_name is not None:
                tenant = s.scalar(select(Tenant).where(Tenant.name == tenant_name.strip()))
                if tenant is None:
                    raise KbaiError(errors.NOT_FOUND, what=f"Tenant '{tenant_name}'")
                query = query.where(Token.tenant_id == tenant.id)
            return [(email or "", self._view(t, now)) for t, email in s.execute(query)]

    # ---- service tokens (owned by the tenant) ------------------------------------------------
    def _service_holder(self, s: Session, actor: Actor, action: str) -> tuple[User, frozenset[str]]:
        """The acting membership, locked, and what it holds now: a session holding
        developer.manage_service_tokens (a token never manages tokens)."""
        if actor.kind != "user" or actor.user_id is None:
            raise KbaiError(errors.SESSION_REQUIRED, action=action)
        user = self._lock_user(s, actor.user_id)
        held = permissions_of(s, user, self.catalog)
        if MANAGE_SERVICE_TOKENS not in held:
            raise KbaiError(errors.NO_SERVICE_TOKEN_PERMISSION, action=action)
        return user, held

    def service_limit_for(self, s: Session, tenant_id: int) -> int:
        limit = s.scalar(select(Tenant.max_service_tokens).where(Tenant.id == tenant_id))
        return limit if limit is not None else self.default_service_limit

    def _service_active(self, s: Session, tenant_id: int, now: datetime) -> builtins.list[Token]:
        return list(
            s.scalars(select(Token).where(Token.tenant_id == tenant_id, Token.user_id.is_(None), _active_clause(now)))
        )

    def service_allowance(self, tenant_id: int) -> tuple[int, int]:
        """(active service tokens, limit) of a tenant; a predecessor in its grace period is not counted."""
        now = self.clock.now()
        with self.db.read() as s:
            active = s.scalar(
                select(func.count(Token.id)).where(
                    Token.tenant_id == tenant_id, Token.user_id.is_(None), _counted_clause(now)
                )
            )
            return int(active or 0), self.service_limit_for(s, tenant_id)

    def create_service(
        self,
        actor: Actor,
        name: object,
        scopes: object,
        *,
        expires_in_days: object = None,
        expires_at: object = None,
        description: object = None,
        allowed_ips: object = None,
        rate_limit: object = None,
        quota: object = None,
    ) -> tuple[TokenView, str]:
        """Mint a service token of the actor's tenant: scopes bounded by what the creator holds now, the
        tenant's policy and its service-token limit as for personal tokens. Returns the view and the
        plaintext, once. Never counted toward the creator's own limit."""
        clean = clean_name(name, "name")
        wanted = self._clean_scopes(scopes)
        note = clean_description(description)
        allowlist = clean_allowlist(allowed_ips)
        rate, budget = clean_rate_limit(rate_limit), clean_quota(quota)
        now = utc_seconds(self.clock.now())
        expiry = resolve_expiry(now, expires_in_days, expires_at)
        with self.db.write() as s:
            user, held = self._service_holder(s, actor, "create service tokens")
            self._lock_tenant(s, user.tenant_id)
            self._admit(s, user.tenant_id, held, wanted, now, expiry, allowlist)
            active = self._service_active(s, user.tenant_id, now)
            if any(t.name.casefold() == clean.casefold() for t in active):
                raise KbaiError(errors.SERVICE_NAME_TAKEN, name=clean)
            limit = self.service_limit_for(s, user.tenant_id)
            counted = sum(1 for t in active if t.revoked_at is None)
            if counted >= limit:
                raise KbaiError(errors.SERVICE_LIMIT_REACHED, active=counted, limit=limit, support=self.support_email)
            token, plaintext = self._mint(
                s,
                user,
                clean,
                wanted,
                now,
                expiry,
                rotated_from=None,
                description=note,
                allowed_ips=allowlist,
                service=True,
                rate_limit=rate,
                quota=budget,
            )
            audit.record(
                s,
                actor,
                "service_token.create",
                at=now,
                target_type="token",
                target_id=token.id,
                tenant_id=user.tenant_id,
                details={
                    "name": clean,
                    "prefix": token.prefix,
                    "scopes": wanted,
                    "expires_at": iso(expiry),
                    **({"allowed_ips": allowlist} if allowlist is not None else {}),
                    **_limits_audit(rate, budget),
                },
            )
            view = self._view(token, now)
        return view, plaintext

    def list_service(self, actor: Actor, *, before_id: int | None = None, limit: int = 100) -> builtins.list[TokenView]:
        """The service tokens of the actor's tenant, newest first (all statuses)."""
        now = self.clock.now()
        with self.db.read() as s:
            if actor.kind != "user" or actor.user_id is None:
                raise KbaiError(errors.SESSION_REQUIRED, action="list service tokens")
            if MANAGE_SERVICE_TOKENS not in actor.permissions:
                raise KbaiError(errors.NO_SERVICE_TOKEN_PERMISSION, action="see the service tokens")
            query = (
                select(Token)
                .where(Token.tenant_id == actor.tenant_id, Token.user_id.is_(None))
                .order_by(Token.id.desc())
                .limit(limit)
            )
            if before_id is not None:
                query = query.where(Token.id < before_id)
            return [self._view(t, now) for t in s.scalars(query)]

    def get_service(self, actor: Actor, token_id: int) -> TokenView:
        """One service token of the actor's tenant, for a session holding developer.manage_service_tokens
        (404 for any other id, as :meth:`list_service` would not list it)."""
        now = self.clock.now()
        if actor.kind != "user" or actor.user_id is None:
            raise KbaiError(errors.SESSION_REQUIRED, action="see service tokens")
        if MANAGE_SERVICE_TOKENS not in actor.permissions:
            raise KbaiError(errors.NO_SERVICE_TOKEN_PERMISSION, action="see the service tokens")
        valid_id = isinstance(token_id, int) and not isinstance(token_id, bool) and 1 <= token_id <= 2_147_483_647
        with self.db.read() as s:
            token = s.get(Token, token_id) if valid_id else None
            if token is None or token.user_id is not None or token.tenant_id != actor.tenant_id:
                raise KbaiError(errors.NOT_FOUND, what="Service token")
            return self._view(token, now)

    def _editable(self, s: Session, actor: Actor, token_id: int) -> Token:
        """The token ``actor`` may change with PATCH: one of their own, or a service token of their tenant when
        they hold developer.manage_service_tokens (404 otherwise, as for any token they may not see)."""
        try:
            return self._token_in_scope(s, actor, token_id, "change another token")
        except KbaiError as err:
            if err.code != "not_found" or actor.kind != "user" or MANAGE_SERVICE_TOKENS not in actor.permissions:
                raise
            user, _held = self._service_holder(s, actor, "change service tokens")
            return self._service_token(s, user, token_id)

    @staticmethod
    def _service_token(s: Session, user: User, token_id: object) -> Token:
        """A service token of ``user``'s tenant; 404 for any other id."""
        valid_id = isinstance(token_id, int) and not isinstance(token_id, bool) and 1 <= token_id <= 2_147_483_647
        token = s.get(Token, token_id) if valid_id else None
        if token is None or token.user_id is not None or token.tenant_id != user.tenant_id:
            raise KbaiError(errors.NOT_FOUND, what="Service token")
        return token

    def rotate_service(
        self, actor: Actor, token_id: int, grace_period_seconds: object = 0, *, expires_in_days: object = None
    ) -> tuple[TokenView, str, TokenView]:
        """:meth:`rotate` for a service token of the actor's tenant (``POST /api/v1/service-tokens/{id}/rotate``)."""
        return self.rotate(actor, token_id, grace_period_seconds, expires_in_days=expires_in_days, service=True)

    def revoke_service(self, actor: Actor, token_id: int) -> TokenView:
        """Revoke a service token of the actor's tenant now (404 for any other id). Idempotent."""
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            user, _held = self._service_holder(s, actor, "revoke service tokens")
            token = self._service_token(s, user, token_id)
            self._lock_tenant(s, token.tenant_id)
            s.refresh(token)
            if token.revoked_at is None or token.revoked_at > now:
                token.revoked_at = now
                token.revoked_by = actor.label[:100]
                audit.record(
                    s,
                    actor,
                    "service_token.revoke",
                    at=now,
                    target_type="token",
                    target_id=token.id,
                    tenant_id=token.tenant_id,
                    details={"name": token.name, "prefix": token.prefix},
                )
            view = self._view(token, now)
            changed = {token.digest}
        self._notify(changed, set())
        return view

    def ceiling(self, tenant_id: int) -> builtins.list[str] | None:
        """The tenant's service-token ceiling; None: the default (each token acts with its own scopes)."""
        with self.db.read() as s:
            found = s.scalar(select(Tenant.service_token_ceiling).where(Tenant.id == tenant_id))
        return self._ordered(found) if found is not None else None

    def set_ceiling(self, actor: Actor, keys: object) -> builtins.list[str] | None:
        """Set (a list of permission keys) or reset (None) the ceiling of the actor's tenant. A session holding
        developer.manage_service_tokens and roles.manage, and every key it allows (nobody grants what they
        don't hold). Every instance hears of it at once: the tenant's service tokens act within it."""
        wanted: builtins.list[str] | None = None
        if keys is not None:
            if isinstance(keys, (list, tuple)) and len(keys) > len(self.catalog.permissions):
                raise KbaiError(errors.VALIDATION, detail="permissions lists each catalog permission at most once.")
            wanted = self._clean_scopes(keys)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            user, held = self._service_holder(s, actor, "change the service-token ceiling")
            if "roles.manage" not in held:
                raise KbaiError(errors.FORBIDDEN, action="change the service-token ceiling", permission="roles.manage")
            for scope in wanted or ():
                if scope in self.catalog.session_only:
                    raise KbaiError(errors.SESSION_ONLY_SCOPE, scope=scope, label=self.catalog.label(scope))
                if scope not in held:
                    raise KbaiError(errors.CEILING_UNHELD, scope=scope)
            tenant = self._lock_tenant(s, user.tenant_id)
            before = tenant.service_token_ceiling
            changed: set[str] = set()
            if (self._ordered(before) if before is not None else None) != wanted:
                tenant.service_token_ceiling = wanted
                changed = set(
                    s.scalars(select(Token.digest).where(Token.tenant_id == tenant.id, Token.user_id.is_(None)))
                )
                audit.record(
                    s,
                    actor,
                    "service_token.ceiling",
                    at=now,
                    target_type="tenant",
                    target_id=tenant.id,
                    tenant_id=tenant.id,
                    details={"from": before, "to": wanted},
                )
        self._notify(changed, set())
        return wanted

    def hand_over_in(self, s: Session, actor: Actor, user: User, token_ids: builtins.list[int]) -> set[str]:
        """Inside the deactivation's transaction: re-home ``token_ids`` (active tokens of ``user``) as service
        tokens of the tenant. The digest stays (the plaintext keeps working), the scopes are cut to what the
        owner holds now and to the tenant's ceiling when one is set; each is audited. Refused, changing
        nothing, when one is not an active token of ``user`` or the tenant's service-token limit would be
        passed. Returns the digests changed (the caller notifies after the commit)."""
        if not token_ids:
            return set()
        # Keeping a token for the tenant makes a service token: only who may make them may do it.
        require(actor, MANAGE_SERVICE_TOKENS, "keep tokens as service tokens", user.tenant_id)
        now = utc_seconds(self.clock.now())
        tenant = self._lock_tenant(s, user.tenant_id)
        tokens = {
            t.id: t
            for t in s.scalars(select(Token).where(Token.id.in_(token_ids), Token.user_id == user.id).with_for_update())
        }
        for token_id in token_ids:
            token = tokens.get(token_id)
            if token is None or token.revoked_at is not None or status_of(token, now) not in ("active", "paused"):
                raise KbaiError(errors.HAND_OVER_NOT_ACTIVE, token_id=token_id)
        active = self._service_active(s, tenant.id, now)
        counted = sum(1 for t in active if t.revoked_at is None)
        limit = self.service_limit_for(s, tenant.id)
        if counted + len(token_ids) > limit:
            raise KbaiError(errors.HAND_OVER_LIMIT, count=len(token_ids), total=counted + len(token_ids), limit=limit)
        # What the token may act with from now on: what it acted with until now (its scopes ∩ what its owner
        # holds now: a hand-over never widens it), cut to the tenant's ceiling when one is set (the default
        # ceiling is the Member role's permissions plus the token's own scopes, so it cuts nothing more).
        ceiling = permissions_of(s, user, self.catalog)
        if actor.kind != "operator" and not trusted_in(actor, user.tenant_id):
            ceiling &= actor.permissions  # nobody grants what they don't hold
        if tenant.service_token_ceiling is not None:
            ceiling &= frozenset(tenant.service_token_ceiling)
        taken = {t.name.casefold() for t in active}
        for token_id in token_ids:
            token = tokens[token_id]
            name = token.name
            n = 2
            while name.casefold() in taken:  # a service token of that name exists: "cron (2)"
                suffix = f" ({n})"
                name = token.name[: 100 - len(suffix)] + suffix
                n += 1
            taken.add(name.casefold())
            kept = [scope for scope in token.scopes if scope in ceiling and scope not in self.catalog.session_only]
            audit.record(
                s,
                actor,
                "token.hand_over",
                at=now,
                target_type="token",
                target_id=token.id,
                tenant_id=tenant.id,
                details={
                    "name": name,
                    "prefix": token.prefix,
                    "from_user": user.id,
                    "owner": user.email,
                    "scopes": {"from": list(token.scopes), "to": kept},
                },
            )
            token.user_id = None
            token.created_by_user_id = user.id
            token.name = name
            token.scopes = kept
        s.flush()
        return {tokens[i].digest for i in token_ids}

    def active_of(self, user_id: int) -> builtins.list[TokenView]:
        """The working tokens (active or paused) of a membership, newest first: what a hand-over may keep."""
        now = self.clock.now()
        with self.db.read() as s:
            rows = s.scalars(
                select(Token)
                .where(Token.user_id == user_id, Token.revoked_at.is_(None), _active_clause(now))
                .order_by(Token.id.desc())
            )
            return [self._view(t, now) for t in rows]

    def _ordered(self, keys: Iterable[str]) -> builtins.list[str]:
        wanted = set(keys)
        return [p.key for p in self.catalog.permissions if p.key in wanted]

    @staticmethod
    def _lock_tenant(s: Session, tenant_id: int) -> Tenant:
        tenant = s.scalar(select(Tenant).where(Tenant.id == tenant_id).with_for_update())
        if tenant is None:
            raise KbaiError(errors.NOT_FOUND, what="Tenant")
        return tenant

    def _lock_owner(self, s: Session, token: Token) -> None:
        """Lock what guards a token's changes: its owner, or its tenant for a service token."""
        if token.user_id is None:
            self._lock_tenant(s, token.tenant_id)
        else:
            self._lock_user(s, token.user_id, require_active=False)

    # ---- helpers -------------------------------------------------------------------------
    def _clean_scopes(self, scopes: object) -> builtins.list[str]:
        if not isinstance(scopes, (list, tuple)):
            raise KbaiError(errors.VALIDATION, detail="scopes must be a list of permission keys.")
        seen: list[str] = []
        for scope in scopes:
            if not isinstance(scope, str):
                raise KbaiError(errors.VALIDATION, detail="scopes must be a list of permission keys.")
            if scope not in self.catalog:
                raise KbaiError(errors.UNKNOWN_SCOPE, scope=scope[:100])
            if scope in seen:
                raise KbaiError(errors.DUPLICATE_SCOPE, scope=scope)
            seen.append(scope)
        return [p.key for p in self.catalog.permissions if p.key in seen]

    @staticmethod
    def _lock_user(s: Session, user_id: int, *, require_active: bool = True) -> User:
        user = s.scalar(select(User).where(User.id == user_id).with_for_update())
        if user is None:
            raise KbaiError(errors.NOT_FOUND, what="User")
        if require_active and not user.active:
            raise KbaiError(errors.USER_INACTIVE)
        return user

    def _mint(
        self,
        s: Session,
        user: User,
        name: str,
        scopes: builtins.list[str],
        now: datetime,
        expiry: datetime | None,
        rotated_from: int | None,
        *,
        description: str | None = None,
        allowed_ips: builtins.list[str] | None = None,
        self_rotate: bool = False,
        service: bool = False,
        rate_limit: RateLimit | None = None,
        quota: Quota | None = None,
    ) -> tuple[Token, str]:
        """``service``: owned by the tenant, ``user`` recorded as its creator."""
        plaintext = fmt.mint()
        token = Token(
            tenant_id=user.tenant_id,
            user_id=None if service else user.id,
            created_by_user_id=user.id if service else None,
            name=name,
            prefix=fmt.display_prefix(plaintext),
            digest=fmt.digest(plaintext),
            scopes=scopes,
            created_at=now,
            expires_at=expiry,
            revoked_at=None,
            revoked_by=None,
            last_used_at=None,
            rotated_from_id=rotated_from,
            description=description,
            allowed_ips=allowed_ips,
            self_rotate=self_rotate,
            rate_limit_requests=rate_limit.requests if rate_limit else None,
            rate_limit_per=rate_limit.per if rate_limit else None,
            quota_version=0,
        )
        _set_quota(token, quota, now)
        s.add(token)
        s.flush()
        return token, plaintext

    @staticmethod
    def _token_to_change(s: Session, actor: Actor, token_id: int, action: str) -> Token:
        """:meth:`_token_in_scope`, and also any token of the actor's tenant for a reviewer of its tokens
        (``developer.review_tokens``; Admin holds it), as the inventory's revoke allows."""
        try:
            return TokenService._token_in_scope(s, actor, token_id, action)
        except KbaiError as err:
            if actor.kind in ("user", "token") and REVIEW_TOKENS in actor.permissions:
                token = s.get(Token, token_id) if 1 <= token_id <= 2_147_483_647 else None
                if token is not None and token.tenant_id == actor.tenant_id:
                    return token
            raise err from None

    @staticmethod
    def _token_in_scope(s: Session, actor: Actor, token_id: int, action: str) -> Token:
        """The token if ``actor`` may act on it; 404 otherwise, so ids of others reveal nothing."""
        valid_id = isinstance(token_id, int) and not isinstance(token_id, bool) and 1 <= token_id <= 2_147_483_647
        token = s.get(Token, token_id) if valid_id else None
        if token is None:
            raise KbaiError(errors.NOT_FOUND, what="Token")
        if actor.kind == "operator":
            return token
        if token.user_id is None:  # a service token: only the service-token routes act on it
            if actor.kind == "token" and token.id == actor.token_id:
                return token
            raise KbaiError(errors.NOT_FOUND, what="Token")
        if actor.kind == "user" and token.user_id == actor.user_id:
            return token
        if actor.kind == "token" and actor.user_id is not None and token.user_id == actor.user_id:
            if token.id == actor.token_id:
                return token
            raise KbaiError(errors.SESSION_REQUIRED, action=action)
        raise KbaiError(errors.NOT_FOUND, what="Token")

    @staticmethod
    def _view(t: Token, now: datetime) -> TokenView:
        return TokenView(
            id=t.id,
            user_id=t.user_id,
            tenant_id=t.tenant_id,
            name=t.name,
            prefix=t.prefix,
            scopes=list(t.scopes),
            created_at=t.created_at,
            last_used_at=t.last_used_at,
            expires_at=t.expires_at,
            revoked_at=t.revoked_at,
            status=status_of(t, now),
            rotated_from_id=t.rotated_from_id,
            description=t.description,
            allowed_ips=list(t.allowed_ips) if t.allowed_ips else None,
            self_rotate=bool(t.self_rotate),
            paused_at=t.paused_at,
            created_by_user_id=t.created_by_user_id,
            rate_limit=_rate_of(t),
            quota=(
                Quota(max(0, t.quota_remaining or 0), t.quota_refill_amount, t.quota_refill_interval)
                if t.quota_total is not None
                else None
            ),
        )

    def notify(self, digests: set[str]) -> None:
        """Tell the listeners (caches, other instances) that these tokens changed, after a commit made
        elsewhere (a hand-over inside a deactivation)."""
        if digests:
            self._notify(digests, set())

    def _notify(self, digests: set[str], user_ids: set[int]) -> None:
        for listener in self.listeners:
            listener(digests, user_ids)


class _NotCached(Exception):
    """A warm-only verification needed storage."""


QUOTA_COLUMNS = (
    "quota_remaining",
    "quota_total",
    "quota_refill_amount",
    "quota_refill_interval",
    "quota_period_start",
    "quota_low_at",
)


def _rate_of(t: Token) -> RateLimit | None:
    if t.rate_limit_requests is None or not t.rate_limit_per:
        return None
    return RateLimit(t.rate_limit_requests, t.rate_limit_per)


def _set_quota(t: Token, quota: Quota | None, now: datetime) -> None:
    """A quota set anew (None: no quota). With a refill, the current period is the one it was set in."""
    t.quota_remaining = quota.remaining if quota else None
    t.quota_total = quota.remaining if quota else None
    t.quota_refill_amount = quota.refill_amount if quota else None
    t.quota_refill_interval = quota.refill_interval if quota else None
    t.quota_period_start = (
        period_start(now, quota.refill_interval) if quota is not None and quota.refill_interval else None
    )
    t.quota_low_at = None


def _json_of(value: RateLimit | Quota | None) -> dict[str, Any] | None:
    return value.json() if value is not None else None


def _limits_audit(rate: RateLimit | None, quota: Quota | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rate is not None:
        out["rate_limit"] = rate.json()
    if quota is not None:
        out["quota"] = quota.json()
    return out


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), DIGEST_CHUNK):
        yield items[start : start + DIGEST_CHUNK]

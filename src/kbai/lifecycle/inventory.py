"""The tenant's token inventory: reviewers (``developer.review_tokens``; Admin holds it) see and revoke
every token of their tenant. Tokens of other tenants do not exist for them (404).

Filters: owner (email or user id), status, ``stale`` (active and unused for 90+ days: the
``unused_90_days`` hygiene flag) and ``expiring_soon`` (active and expiring within 7 days). Pages are
newest first with the last id as the cursor. Revoking someone else's token audits it and tells the
owner in-app and by email.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from kbai import errors
from kbai.access.catalog import REVIEW_TOKENS
from kbai.access.service import require
from kbai.clock import human, utc_seconds
from kbai.delivery.notifications import NewNotification, Notifications
from kbai.errors import KbaiError
from kbai.lifecycle.hygiene import STALE_DAYS, unused_since
from kbai.store.audit import Actor
from kbai.store.models import Token, User
from kbai.tokens.service import TokenService, TokenView

EXPIRING_SOON_DAYS = 7
STATUSES = ("active", "paused", "expired", "revoked")
TOKEN_REVOKED_BY_ADMIN = "token.revoked_by_admin"


@dataclass(frozen=True)
class InventoryFilter:
    owner: str | None = None  # an email, or a user id in digits
    status: str | None = None
    stale: bool = False
    expiring_soon: bool = False


@dataclass(frozen=True)
class InventoryRow:
    view: TokenView
    owner_email: str


class Inventory:
    def __init__(self, tokens: TokenService, notifications: Notifications) -> None:
        self.tokens = tokens
        self.notifications = notifications

    def list(
        self,
        actor: Actor,
        where: InventoryFilter | None = None,
        *,
        before_id: int | None = None,
        limit: int | None = 100,
    ) -> list[InventoryRow]:
        """Tokens of the actor's tenant matching ``where``, newest first (``limit=None``: all, for export)."""
        require(actor, REVIEW_TOKENS, "review the tenant's tokens")
        f = where or InventoryFilter()
        now = utc_seconds(self.tokens.clock.now())
        query = (
            select(Token, User.email)
            .outerjoin(User, User.id == Token.user_id)  # service tokens too: owned by the tenant, no email
            .where(Token.tenant_id == actor.tenant_id)
            .order_by(Token.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        if before_id is not None:
            query = query.where(Token.id < before_id)
        if f.owner is not None:
            owner = f.owner.strip()
            if owner.isascii() and owner.isdigit():
                # Ids are 32-bit: a larger number matches nobody (and must not overflow the database).
                user_id = int(owner) if len(owner) <= 10 else 0
                query = query.where(Token.user_id == (user_id if user_id <= 2_147_483_647 else 0))
            else:
                query = query.where(User.email == owner.lower())
        if f.status is not None:
            if f.status not in STATUSES:
                raise KbaiError(errors.VALIDATION, detail="status must be active, paused, expired or revoked.")
            query = query.where(_status_clause(f.status, now))
        if f.stale:
            query = query.where(_status_clause("active", now), unused_since(now - timedelta(days=STALE_DAYS)))
        if f.expiring_soon:
            query = query.where(
                _status_clause("active", now),
                Token.expires_at.is_not(None),
                Token.expires_at <= now + timedelta(days=EXPIRING_SOON_DAYS),
            )
        with self.tokens.db.read() as s:
            return [InventoryRow(TokenService._view(t, now), email or "") for t, email in s.execute(query)]

    def revoke(self, actor: Actor, token_id: int) -> TokenView:
        """Revoke any token of the actor's tenant now; the owner is told (unless they revoked it themselves).
        Idempotent: an already revoked token is returned as it is, with nothing audited or sent."""
        require(actor, REVIEW_TOKENS, "revoke other people's tokens")
        self._in_tenant(actor, token_id)
        added = []

        def record(s: Session, revoked: list[tuple[TokenView, str]], at: datetime) -> None:
            added.extend(
                self.notifications.add(
                    s,
                    [
                        _notice(view, email, actor, at)
                        for view, email in revoked
                        # a service token has no owner to tell; nor does one's own token
                        if view.user_id is not None and view.user_id != actor.user_id
                    ],
                    at,
                )
            )

        self.tokens.revoke_matching(
            actor,
            Token.id == token_id,
            Token.tenant_id == actor.tenant_id,
            reason="revoked by a reviewer of the tenant's tokens",
            record=record,
        )
        self.notifications.deliver(added)
        return self._in_tenant(actor, token_id)

    def get(self, actor: Actor, token_id: int) -> InventoryRow:
        require(actor, REVIEW_TOKENS, "review the tenant's tokens")
        view = self._in_tenant(actor, token_id)
        if view.user_id is None:
            return InventoryRow(view, "")  # a service token: owned by the tenant
        with self.tokens.db.read() as s:
            email = s.scalar(select(User.email).select_from(User).where(User.id == view.user_id))
        return InventoryRow(view, str(email))

    def _in_tenant(self, actor: Actor, token_id: int) -> TokenView:
        now = utc_seconds(self.tokens.clock.now())
        with self.tokens.db.read() as s:
            token = s.get(Token, token_id) if 1 <= token_id <= 2_147_483_647 else None
            if token is None or (actor.kind != "operator" and token.tenant_id != actor.tenant_id):
                raise KbaiError(errors.NOT_FOUND, what="Token")
            return TokenService._view(token, now)


def _status_clause(status: str, now: datetime) -> ColumnElement[bool]:
    revoked = and_(Token.revoked_at.is_not(None), Token.revoked_at <= now)
    expired = and_(Token.expires_at.is_not(None), Token.expires_at <= now)
    if status == "revoked":
        return revoked
    if status == "expired":
        return and_(~revoked, expired)
    working = and_(
        or_(Token.revoked_at.is_(None), Token.revoked_at > now), or_(Token.expires_at.is_(None), Token.expires_at > now)
    )
    if status == "paused":
        return and_(working, Token.paused_at.is_not(None))
    return and_(working, Token.paused_at.is_(None))


def _notice(view: TokenView, email: str, actor: Actor, at: datetime) -> NewNotification:
    assert view.user_id is not None  # (revoke() tells owners only: a service token has none)
    by = actor.email or actor.label
    return NewNotification(
        user_id=view.user_id,
        tenant_id=view.tenant_id,
        email=email,
        kind=TOKEN_REVOKED_BY_ADMIN,
        title=f"Your token {view.prefix} ({view.name[:60]}) was revoked by {by}"[:200],
        body=(
            f"{by}, who reviews your organisation's tokens, revoked it at {human(at)}: every request that uses "
            "it now gets 401. If an integration still needs access, ask them why, then create a new token "
            "under System Settings → API Keys."
        ),
        details={"token_id": view.id, "prefix": view.prefix, "name": view.name, "revoked_by": by},
    )

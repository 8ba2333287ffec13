"""Token hygiene: flags that say a token deserves attention, and the auto-revoke policy that acts on them.

The flags are computed, never stored: from ``created_at``, ``last_used_at`` and the clock, for active
tokens only (a revoked or expired token needs nothing more). "Unused" always means: no successful
request since ``last_used_at``, or since ``created_at`` for a token never used. The same definition
drives the inventory's ``stale`` filter and the auto-revoke policy, so a badge, a filter and a
revocation can never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from kbai.clock import human, iso, utc_seconds
from kbai.delivery.notifications import NewNotification, Notifications
from kbai.store.audit import Actor
from kbai.store.models import TenantPolicy, Token, User
from kbai.tokens.service import TokenService, TokenView

log = logging.getLogger("kbai.hygiene")

NEVER_USED = "never_used"
UNUSED_90_DAYS = "unused_90_days"
OLDER_THAN_90_DAYS = "older_than_90_days"
# In display order, with the badge each one gets on screen.
FLAGS = (NEVER_USED, UNUSED_90_DAYS, OLDER_THAN_90_DAYS)
LABELS = {
    NEVER_USED: "Never used",
    UNUSED_90_DAYS: "Unused for 90+ days",
    OLDER_THAN_90_DAYS: "Older than 90 days — rotate",
}
STALE_DAYS = 90
ROTATE_AFTER_DAYS = 90

AUTO_REVOKE = Actor(kind="system", email="auto-revoke policy")  # audited as "system (auto-revoke policy)"
TOKEN_AUTO_REVOKED = "token.auto_revoked"


def last_activity(view: TokenView) -> datetime:
    """When the token was last used, or created when it never was."""
    return view.last_used_at or view.created_at


def hygiene(view: TokenView, now: datetime) -> list[str]:
    """The flags of one token at ``now`` (see :data:`FLAGS`); empty for revoked and expired tokens."""
    if view.status != "active":
        return []
    flags = []
    if view.last_used_at is None:
        flags.append(NEVER_USED)
    if last_activity(view) <= now - timedelta(days=STALE_DAYS):
        flags.append(UNUSED_90_DAYS)
    if view.created_at <= now - timedelta(days=ROTATE_AFTER_DAYS):
        flags.append(OLDER_THAN_90_DAYS)
    return flags


def unused_since(cutoff: datetime) -> ColumnElement[bool]:
    """SQL condition: the token's last activity (last use, else creation) is at or before ``cutoff``."""
    return func.coalesce(Token.last_used_at, Token.created_at) <= cutoff


class AutoRevoke:
    """Applies every tenant's ``auto_revoke_unused_days``: revokes active tokens unused for that many days,
    audits each (actor "system (auto-revoke policy)") and tells the owner in-app and by email."""

    def __init__(self, tokens: TokenService, notifications: Notifications) -> None:
        self.tokens = tokens
        self.notifications = notifications

    def run(self) -> list[TokenView]:
        """One pass over every tenant with the policy. Safe with several workers at once: each token is
        revoked (and its owner told) by exactly one of them."""
        with self.tokens.db.read() as s:
            policies = s.execute(
                select(TenantPolicy.tenant_id, TenantPolicy.auto_revoke_unused_days).where(
                    TenantPolicy.auto_revoke_unused_days.is_not(None)
                )
            ).all()
        revoked: list[TokenView] = []
        for tenant_id, days in policies:
            assert days is not None  # the query takes only policies that set it
            revoked.extend(self.run_tenant(int(tenant_id), int(days)))
        return revoked

    def run_tenant(self, tenant_id: int, days: int) -> list[TokenView]:
        now = utc_seconds(self.tokens.clock.now())
        cutoff = now - timedelta(days=days)
        added = []

        def record(s: Session, revoked: list[tuple[TokenView, str]], at: datetime) -> None:
            active = set(
                s.scalars(select(User.id).where(User.id.in_({v.user_id for v, _ in revoked}), User.active.is_(True)))
            )
            told = [(v, email) for v, email in revoked if v.user_id in active]
            added.extend(self.notifications.add(s, _notices(told, days), at))

        views = self.tokens.revoke_matching(
            AUTO_REVOKE,
            Token.tenant_id == tenant_id,
            unused_since(cutoff),
            reason=f"unused for {days} days (tenant policy)",
            record=record,
        )
        if views:
            log.info("auto-revoked %d token(s) unused for %d days in tenant %d", len(views), days, tenant_id)
        self.notifications.deliver(added)
        return views


def _notices(revoked: Sequence[tuple[TokenView, str]], days: int) -> list[NewNotification]:
    out = []
    for view, email in revoked:
        if view.user_id is None:  # (a service token has no owner to tell)
            continue
        used = f"last used {human(view.last_used_at)}" if view.last_used_at else "never used"
        out.append(
            NewNotification(
                user_id=view.user_id,
                tenant_id=view.tenant_id,
                email=email,
                kind=TOKEN_AUTO_REVOKED,
                title=f"Your token {view.prefix} ({view.name[:60]}) was revoked: unused for {days} days",
                body=(
                    f"Your organisation revokes tokens unused for {days} days. This one was {used}, so it was "
                    f"revoked at {human(view.revoked_at)} and every request that uses it now gets 401. If an "
                    "integration still needs it, create a new token under System Settings → API Keys."
                ),
                details={
                    "token_id": view.id,
                    "prefix": view.prefix,
                    "name": view.name,
                    "unused_days": days,
                    "last_used_at": iso(view.last_used_at),
                },
            )
        )
    return out

"""Leak response: a token found where it should not be is revoked at once and its people are told.

Three ways in, one path. GitHub secret scanning (``POST /api/v1/secret-scanning/github``), the
public revocation endpoint (anyone who found tokens, ``POST /api/v1/credentials/revoke``) and
``kbai scan --revoke`` all call :meth:`LeakResponse.report`. In one transaction it revokes every
active token among the reported ones (through :meth:`TokenService.revoke_found`, so every
instance's verification cache drops them), and for each token it revoked writes one
``token.leak_report`` audit event (where it leaked and who said so, never the token) and adds in-app
notifications (and mail) for the owner and the tenant's admins. Only a change of state is news: a
token that was already revoked or expired is reported as ours to GitHub but audits and notifies
nothing, so whoever re-sends a known leak, as often as they like, cannot flood the owner's and every
admin's inbox or the audit log. A report reveals nothing about whose tokens they were: GitHub
learns "ours" or "not ours" for strings it already holds, the public endpoint learns nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbai import tokenformat as fmt
from kbai.access.service import ADMIN
from kbai.clock import human
from kbai.delivery.notifications import TOKEN_LEAKED, NewNotification, Notifications, NotificationView
from kbai.store import audit
from kbai.store.audit import Actor
from kbai.store.models import Role, User, UserRole
from kbai.tokens.service import FoundToken, TokenService

GITHUB = "GitHub secret scanning"
PUBLIC = "public credential revocation"
TOKEN_TYPE = "kbai_api_token"
MAX_LOCATIONS = 20
MAX_TEXT = 2000


@dataclass(frozen=True)
class LeakReport:
    """One place a string that may be a token was found (GitHub's ``{token, type, url, source}``)."""

    token: str = field(repr=False)
    type: str | None = None
    url: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Sighting:
    """Where a token was seen, without the token."""

    url: str | None = None
    source: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class Verdict:
    """GitHub's answer shape: ``token_hash`` is the SHA-256 hex of the reported string."""

    token_hash: str
    token_type: str
    label: Literal["true_positive", "false_positive"]


class LeakResponse:
    def __init__(self, tokens: TokenService, notifications: Notifications) -> None:
        self.tokens = tokens
        self.notifications = notifications
        # Other secrets of ours a report may hold (SCIM provisioning credentials): each hook revokes those among
        # the reported strings and returns the SHA-256 digests that were ours.
        self.other_secrets: list[Callable[[Actor, str, list[str]], set[str]]] = []

    def report(self, actor: Actor, reporter: str, reports: Sequence[LeakReport]) -> list[Verdict]:
        """Respond to every token of ours among ``reports``; one verdict per report, in order."""
        digests = [fmt.digest(r.token) if fmt.is_well_formed(r.token) else None for r in reports]
        where: dict[str, list[Sighting]] = {}
        for d, r in zip(digests, reports, strict=True):
            if d is not None:
                where.setdefault(d, []).append(Sighting(r.url, r.source, r.type))
        found = self.respond(actor, reporter, where)
        others: set[str] = set()
        rest = [r.token for d, r in zip(digests, reports, strict=True) if d is None]
        for hook in self.other_secrets if rest else ():
            others |= hook(actor, reporter, rest)
        return [
            Verdict(
                fmt.report_hash(r.token),
                _clip(r.type, 100) or TOKEN_TYPE,
                "true_positive"
                if (d is not None and d in found) or fmt.report_hash(r.token) in others
                else "false_positive",
            )
            for d, r in zip(digests, reports, strict=True)
        ]

    def respond(self, actor: Actor, reporter: str, where: Mapping[str, Sequence[Sighting]]) -> dict[str, FoundToken]:
        """Revoke every active token among the digests in ``where`` in one transaction; audit each one this
        revoked and notify its owner and tenant admins. Returns every token of ours, by digest (also those
        that were already revoked or expired, which are left as they are, unaudited and unannounced)."""
        if not where:
            return {}
        added: list[NotificationView] = []

        def record(s: Session, found: list[FoundToken], now: datetime) -> None:
            changed = [f for f in found if f.revoked_now]  # active -> revoked, in this very transaction
            if not changed:
                return
            admins = _admins(s, {f.view.tenant_id for f in changed})
            messages: list[NewNotification] = []
            for f in changed:
                locations = _locations(where[f.digest])
                first = locations[0] if locations else {}
                details: dict[str, Any] = {
                    "prefix": f.view.prefix,
                    "name": f.view.name,
                    "owner": f.owner_email,
                    "reporter": reporter,
                    "url": first.get("url"),
                    "source": first.get("source"),
                    "type": _clip(where[f.digest][0].type, 100),
                    "revoked": f.revoked_now,
                    "status": f.view.status,
                }
                if len(locations) > 1:
                    details["locations"] = locations
                audit.record(
                    s,
                    actor,
                    "token.leak_report",
                    at=now,
                    target_type="token",
                    target_id=f.view.id,
                    tenant_id=f.view.tenant_id,
                    details=details,
                )
                messages.extend(_messages(f, reporter, locations, admins.get(f.view.tenant_id, []), now))
            added.extend(self.notifications.add(s, messages, now))

        found = self.tokens.revoke_found(actor, where, revoked_by=f"leak report: {reporter}", record=record)
        self.notifications.deliver(added)
        return found


def _clip(text: str | None, limit: int = MAX_TEXT) -> str | None:
    if text is None:
        return None
    # Control characters would garble notifications and logs; a URL never needs them.
    clean = "".join(ch for ch in text if ch.isprintable())
    return fmt.redact(clean[:limit])


def _locations(reports: Sequence[Sighting]) -> list[dict[str, str | None]]:
    out: list[dict[str, str | None]] = []
    for r in reports:
        loc = {"url": _clip(r.url), "source": _clip(r.source, 100)}
        if (loc["url"] or loc["source"]) and loc not in out:
            out.append(loc)
    return out[:MAX_LOCATIONS]


def _admins(s: Session, tenant_ids: set[int]) -> dict[int, list[tuple[int, str]]]:
    """Active admins (user id, email) of each tenant, in one query."""
    rows = s.execute(
        select(User.tenant_id, User.id, User.email)
        .distinct()
        .join(UserRole, UserRole.user_id == User.id)
        .join(Role, Role.id == UserRole.role_id)
        .where(User.tenant_id.in_(tenant_ids), User.active.is_(True), Role.builtin == ADMIN)
        .order_by(User.id)
    ).all()
    out: dict[int, list[tuple[int, str]]] = {}
    for tenant_id, user_id, email in rows:
        out.setdefault(tenant_id, []).append((user_id, email))
    return out


def _messages(
    f: FoundToken, reporter: str, locations: list[dict[str, str | None]], admins: list[tuple[int, str]], now: datetime
) -> list[NewNotification]:
    v = f.view
    if locations:
        places = "; ".join(
            (loc["url"] or "an unnamed place") + (f" ({loc['source']})" if loc["source"] else "") for loc in locations
        )
        found_at = f"{reporter} found it at {places}."
    else:
        found_at = f"Someone who found it sent it to us through {reporter}."
    if f.revoked_now:
        outcome = (
            f"It was revoked automatically at {human(now)}: every request that uses it now gets 401. "
            "Create a new token under System Settings → API Keys, update the integrations that used this "
            "one, and remove the token from where it leaked (including that repository's history)."
        )
    else:
        outcome = (
            f"It was already {v.status}, so it no longer works. Still remove it from where it leaked "
            "(including that repository's history)."
        )
    details = {
        "token_id": v.id,
        "prefix": v.prefix,
        "name": v.name,
        "owner": f.owner_email,
        "reporter": reporter,
        "locations": locations,
        "revoked": True,
    }
    verb = "found in public and revoked"
    out: list[NewNotification] = []
    if f.owner_active and v.user_id is not None:  # a service token has no owner to tell
        out.append(
            NewNotification(
                user_id=v.user_id,
                tenant_id=v.tenant_id,
                email=f.owner_email,
                kind=TOKEN_LEAKED,
                title=f"Your token {v.prefix} ({v.name[:60]}) was {verb}",
                body=f"{found_at} {outcome}",
                details=details,
            )
        )
    for user_id, email in admins:
        if user_id == v.user_id:
            continue
        out.append(
            NewNotification(
                user_id=user_id,
                tenant_id=v.tenant_id,
                email=email,
                kind=TOKEN_LEAKED,
                title=f"A token of {f.owner_email} ({v.prefix}, {v.name[:60]}) was {verb}"[:200],
                body=f"{found_at} {outcome.replace('Create a new token', f'{f.owner_email} should create a new token')}",
                details=details,
            )
        )
    return out

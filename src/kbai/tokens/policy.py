"""Tenant policies: the token rules a tenant sets for its own people, and its webhook.

A policy is one optional row per tenant (no row: no rules). Token creation and rotation read it in
their own write transaction (:func:`policy_of`, :func:`check_lifetime`), so a token can never be
minted against a policy that was already committed. Everyone in the tenant may read the rules (the
create form shows them); changing them needs ``roles.manage`` and is audited (a webhook URL by its
scheme and host only: its path and query may be a receiver's secret). A new webhook URL passes the
SSRF guard (:mod:`kbai.egress`) before it is saved, and again before every send. The webhook secret
is generated here (Standard Webhooks' ``whsec_`` format), returned once, stored only encrypted
(:mod:`kbai.secretbox`), and used by :mod:`kbai.delivery.webhooks` to sign every event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbai import egress, errors
from kbai.access.service import require
from kbai.clock import Clock, utc_seconds
from kbai.delivery.webhooks import new_secret
from kbai.errors import KbaiError
from kbai.secretbox import SecretBox
from kbai.store import Database, audit
from kbai.store.audit import Actor
from kbai.store.models import Tenant, TenantPolicy

MAX_DAYS = 3650
MAX_URL = 2000
SAVE_CHECK_SECONDS = 5.0  # the DNS lookup of a new webhook URL at save time


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: object = _Unset()  # "leave this rule as it is" (None means "remove the rule")


@dataclass(frozen=True)
class Policy:
    """A tenant's token rules. ``None`` means "no such rule"."""

    tenant_id: int
    max_lifetime_days: int | None = None
    expiration_required: bool = False
    auto_revoke_unused_days: int | None = None
    webhook_url: str | None = None
    require_allowlist: bool = False
    updated_at: datetime | None = None

    @property
    def webhook_configured(self) -> bool:
        return self.webhook_url is not None


@dataclass(frozen=True)
class Webhook:
    """Where a tenant's events go and its signing secret, encrypted (never shown after it was set)."""

    url: str
    secret_encrypted: str


def policy_of(session: Session, tenant_id: int) -> Policy:
    row = session.get(TenantPolicy, tenant_id)
    return _view(row) if row is not None else Policy(tenant_id)


def webhook_of(session: Session, tenant_id: int) -> Webhook | None:
    row = session.get(TenantPolicy, tenant_id)
    if row is None or row.webhook_url is None or row.webhook_secret_encrypted is None:
        return None
    return Webhook(row.webhook_url, row.webhook_secret_encrypted)


def origin(url: str | None) -> str | None:
    """Scheme and host of a webhook URL, all the audit log records of it."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{'[' + host + ']' if ':' in host else host}"


def check_lifetime(policy: Policy, now: datetime, expiry: datetime | None, *, rotating: bool = False) -> None:
    """Refuse an expiry the policy forbids, with a message naming the rule.

    A maximum of N days allows any time through the end of the UTC day N days from now, so a date
    picked in a form ("2027-03-31", which means through 23:59:59 that day) is never refused for
    being a few hours past the exact N x 24 h.
    """
    advice = " Rotate it with expires_in_days to choose the new token's lifetime." if rotating else ""
    if expiry is None:
        if policy.expiration_required or policy.max_lifetime_days is not None:
            within = f" at most {policy.max_lifetime_days} days away" if policy.max_lifetime_days else ""
            raise KbaiError(errors.POLICY_EXPIRATION_REQUIRED, within=within, advice=advice)
        return
    if policy.max_lifetime_days is not None:
        last_day = (now + timedelta(days=policy.max_lifetime_days)).date()
        if expiry > datetime.combine(last_day, time(23, 59, 59), tzinfo=UTC):
            raise KbaiError(errors.POLICY_MAX_LIFETIME, days=policy.max_lifetime_days, advice=advice)


def lifetime_within(policy: Policy, now: datetime, expiry: datetime | None) -> datetime | None:
    """``expiry``, brought forward to what the policy allows: for a rotation nobody is there to choose
    (self-rotation). No expiry under a rule that requires one becomes the longest allowed, or 90 days."""
    if policy.max_lifetime_days is not None:
        last = datetime.combine((now + timedelta(days=policy.max_lifetime_days)).date(), time(23, 59, 59), tzinfo=UTC)
        return last if expiry is None or expiry > last else expiry
    if expiry is None and policy.expiration_required:
        return utc_seconds(now + timedelta(days=90))
    return expiry


class PolicyService:
    def __init__(self, db: Database, clock: Clock, guard: egress.Guard, secrets: SecretBox) -> None:
        self.db = db
        self.clock = clock
        self.guard = guard
        self.secrets = secrets

    def get(self, tenant_id: int) -> Policy:
        with self.db.read() as s:
            return policy_of(s, tenant_id)

    def tenant_id(self, name: str) -> int:
        with self.db.read() as s:
            found = s.scalar(select(Tenant.id).where(Tenant.name == name.strip()))
        if found is None:
            raise KbaiError(errors.NOT_FOUND, what=f"Tenant '{name}'")
        return int(found)

    def set(
        self,
        actor: Actor,
        tenant_id: int,
        *,
        max_lifetime_days: object = UNSET,
        expiration_required: object = UNSET,
        auto_revoke_unused_days: object = UNSET,
        webhook_url: object = UNSET,
        require_allowlist: object = UNSET,
        new_webhook_secret: bool = False,
    ) -> tuple[Policy, str | None]:
        """Change the given rules (``UNSET`` ones stay, ``None`` removes one). Returns the policy and, when
        a webhook URL was set for the first time or ``new_webhook_secret`` was asked for, the new secret:
        shown this once."""
        require(actor, "roles.manage", "change the token policy", tenant_id)
        changes: dict[str, object] = {}
        for name, value in (
            ("max_lifetime_days", max_lifetime_days),
            ("auto_revoke_unused_days", auto_revoke_unused_days),
        ):
            if value is not UNSET:
                changes[name] = _days(name, value)
        if expiration_required is not UNSET:
            if not isinstance(expiration_required, bool):
                raise KbaiError(errors.VALIDATION, detail="expiration_required must be true or false.")
            changes["expiration_required"] = expiration_required
        if require_allowlist is not UNSET:
            if not isinstance(require_allowlist, bool):
                raise KbaiError(errors.VALIDATION, detail="require_allowlist must be true or false.")
            changes["require_allowlist"] = require_allowlist
        if webhook_url is not UNSET:
            changes["webhook_url"] = _url(webhook_url)
            if changes["webhook_url"] is not None and changes["webhook_url"] != self.get(tenant_id).webhook_url:
                self._check_destination(str(changes["webhook_url"]))
        now = utc_seconds(self.clock.now())
        secret: str | None = None
        with self.db.write() as s:
            if s.get(Tenant, tenant_id) is None:
                raise KbaiError(errors.NOT_FOUND, what="Tenant")
            row = s.scalar(select(TenantPolicy).where(TenantPolicy.tenant_id == tenant_id).with_for_update())
            if row is None:
                row = TenantPolicy(
                    tenant_id=tenant_id,
                    max_lifetime_days=None,
                    expiration_required=False,
                    auto_revoke_unused_days=None,
                    webhook_url=None,
                    webhook_secret_encrypted=None,
                    require_allowlist=False,
                    updated_at=now,
                )
                s.add(row)
            before = _view(row)
            for name, value in changes.items():
                setattr(row, name, value)
            if row.webhook_url is None:
                row.webhook_secret_encrypted = None
            elif row.webhook_secret_encrypted is None or new_webhook_secret:
                secret = new_secret()
                row.webhook_secret_encrypted = self.secrets.encrypt(secret)
            row.updated_at = now
            s.flush()
            after = _view(row)
            diff = {
                k: {"from": getattr(before, k), "to": getattr(after, k)}
                for k in ("max_lifetime_days", "expiration_required", "auto_revoke_unused_days", "require_allowlist")
                if getattr(before, k) != getattr(after, k)
            }
            if before.webhook_url != after.webhook_url:
                diff["webhook_url"] = {"from": origin(before.webhook_url), "to": origin(after.webhook_url)}
            if secret is not None:
                diff["webhook_secret"] = {"from": None, "to": "(new secret, not recorded)"}
            audit.record(
                s,
                actor,
                "policy.update",
                at=now,
                target_type="tenant",
                target_id=tenant_id,
                tenant_id=tenant_id,
                details={"changes": diff},
            )
        return after, secret

    def _check_destination(self, url: str) -> None:
        """Refuse, with the reason, a webhook URL the SSRF guard would never send to (422)."""
        try:
            self.guard.check_url(url, SAVE_CHECK_SECONDS)
        except egress.Refused as exc:
            raise KbaiError(errors.WEBHOOK_URL_REFUSED, reason=exc.reason) from None


def _days(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
        raise KbaiError(
            errors.VALIDATION,
            detail=f"{name} must be a whole number of days from 1 to {MAX_DAYS}, or null for no rule.",
        )
    return value


def _url(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_URL:
        raise KbaiError(errors.WEBHOOK_URL_INVALID)
    text = value.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        raise KbaiError(errors.WEBHOOK_URL_INVALID) from None
    if parts.scheme not in ("http", "https") or not host or any(ch.isspace() or not ch.isprintable() for ch in text):
        raise KbaiError(errors.WEBHOOK_URL_INVALID)
    return text


def _view(row: TenantPolicy) -> Policy:
    return Policy(
        tenant_id=row.tenant_id,
        max_lifetime_days=row.max_lifetime_days,
        expiration_required=bool(row.expiration_required),
        auto_revoke_unused_days=row.auto_revoke_unused_days,
        webhook_url=row.webhook_url,
        require_allowlist=bool(row.require_allowlist),
        updated_at=row.updated_at,
    )

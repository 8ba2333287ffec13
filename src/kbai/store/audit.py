"""Who did what: the :class:`Actor` behind every change, and the append-only audit log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbai.store.models import AuditEvent
from kbai.tokenformat import redact


@dataclass(frozen=True)
class Actor:
    """The principal of a request or command.

    ``kind`` is ``user`` (an interactive session), ``token`` (an API token acting for its owner),
    ``operator`` (the CLI, run by whoever operates the service), ``service`` (a service credential) or
    ``system`` (kbai itself applying a rule, e.g. the auto-revoke policy; ``email`` names the rule) or
    ``provider`` (the host product's OpenID provider vouching for a sign-in; ``email`` holds its issuer) or
    ``scim`` (a tenant's SCIM provisioning credential: operator trust inside ``tenant_id`` alone; ``email``
    holds the credential's name and display prefix).
    ``permissions`` are what the actor may do right now: a user's permissions, or a token's
    effective scopes.
    """

    kind: str
    user_id: int | None = None
    tenant_id: int | None = None
    email: str | None = None
    token_id: int | None = None
    token_prefix: str | None = None
    ip: str | None = None
    permissions: frozenset[str] = field(default_factory=frozenset)
    # A person acting through the operator API: the service credential that issued the request for them.
    via: str | None = None
    # ``user_id`` is the membership (the person in ``tenant_id``); this is the person, the same in every tenant.
    person_id: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "user" and self.via:
            return f"service:{self.via} for user:{self.email}"
        if self.kind == "user":
            return f"user:{self.email}"
        if self.kind == "token":
            return f"token:{self.token_prefix} ({self.email or 'service token'})"
        if self.kind == "service":
            return f"service:{self.email}"
        if self.kind == "system":
            return f"system ({self.email})"
        if self.kind == "provider":
            return f"provider:{self.email}"
        if self.kind == "scim":
            return f"scim:{self.email}"
        return "operator"

    @classmethod
    def operator(cls) -> Actor:
        return cls(kind="operator")

    def with_ip(self, ip: str | None) -> Actor:
        return Actor(**{**self.__dict__, "ip": ip})


ACTIONS = (
    "tenant.create",
    "tenant.rename",
    "user.create",
    "user.roles",
    "user.deactivate",
    "user.reactivate",
    "user.password",
    "role.create",
    "role.update",
    "role.delete",
    "limit.set",
    "token.create",
    "token.revoke",
    "token.rotate",
    "token.pause",
    "token.resume",
    "token.update",
    "token.self_rotate",
    "token.reuse_after_rotation",
    "token.leak_report",
    "session.login",
    "session.switch",
    "user.accept_invitation",
    "identity.link",
    "session.logout",
    "service_credential.create",
    "service_credential.revoke",
    "provisioning_credential.create",
    "provisioning_credential.revoke",
    "provisioning_credential.leak_report",
    "admin_request.create",
    "policy.update",
    "service_token.create",
    "service_token.revoke",
    "service_token.rotate",
    "service_token.ceiling",
    "token.hand_over",
    "limit.set_service_tokens",
)


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    at: datetime,
    target_type: str,
    target_id: object = None,
    tenant_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction, so it lands if and only if the change does."""
    assert action in ACTIONS, action
    clean = redacted(details or {})
    event = AuditEvent(
        tenant_id=tenant_id if tenant_id is not None else actor.tenant_id,
        at=at,
        actor=redact(actor.label)[:200],  # the column's size: a 254-char email makes a longer label
        actor_user_id=actor.user_id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        ip=actor.ip,
        details=clean,
    )
    session.add(event)
    return event


def redacted(value: Any) -> Any:
    """``value`` (str, dict, list) with anything token-shaped cut to its display prefix."""
    # Belt and braces: callers pass display prefixes, but nothing token-shaped may ever be stored.
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(v) for v in value]
    return value


@dataclass(frozen=True)
class AuditFilter:
    """What an admin narrows the log to; every field is optional."""

    action: str | None = None
    actor_user_id: int | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def events(
    session: Session,
    tenant_id: int | None,
    *,
    before_id: int | None = None,
    limit: int | None = 50,
    action: str | None = None,
    actor_user_id: int | None = None,
    where: AuditFilter | None = None,
) -> list[AuditEvent]:
    """Newest first; ``before_id`` is the cursor from the previous page."""
    f = where or AuditFilter(action=action, actor_user_id=actor_user_id)
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if limit is not None:
        query = query.limit(limit)
    if tenant_id is not None:
        query = query.where(AuditEvent.tenant_id == tenant_id)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if f.action is not None:
        query = query.where(AuditEvent.action == f.action)
    if f.actor_user_id is not None:
        query = query.where(AuditEvent.actor_user_id == f.actor_user_id)
    if f.target_type is not None:
        query = query.where(AuditEvent.target_type == f.target_type)
    if f.target_id is not None:
        query = query.where(AuditEvent.target_id == f.target_id)
    if f.since is not None:
        query = query.where(AuditEvent.at >= f.since)
    if f.until is not None:
        query = query.where(AuditEvent.at < f.until)
    return list(session.scalars(query))

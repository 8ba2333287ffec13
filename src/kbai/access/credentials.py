"""Service credentials: a client id and secret an operator issues to a resource server for introspection."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from kbai import errors
from kbai.access.catalog import Catalog
from kbai.clock import Clock, utc_seconds
from kbai.errors import KbaiError
from kbai.store import Database, audit
from kbai.store.audit import Actor
from kbai.store.models import ServiceCredential, Tenant
from kbai.validate import clean_name

# What a service credential may do: RFC 7662 introspection; the operator API's tenants and memberships; tokens
# issued on a person's behalf. An operator grants them (`--allow`); a credential never gains one later.
ABILITIES = ("introspect", "tenants", "tokens")


def clean_abilities(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise KbaiError(errors.VALIDATION, detail=f"Allow one or more of {', '.join(ABILITIES)}.")
    wanted = {str(i).strip() for i in items if str(i).strip()}
    unknown = sorted(wanted - set(ABILITIES))
    if unknown or not wanted:
        raise KbaiError(
            errors.VALIDATION,
            detail=f"Unknown ability '{(unknown or [''])[0][:40]}': allow one or more of {', '.join(ABILITIES)}.",
        )
    return tuple(a for a in ABILITIES if a in wanted)


@dataclass(frozen=True)
class Credential:
    id: int
    name: str
    client_id: str
    abilities: tuple[str, ...] = ("introspect",)

    def actor(self, ip: str | None = None) -> Actor:
        """The credential as the rules see it: operator trust for the abilities it was given."""
        return Actor(
            kind="service",
            email=f"{self.name} ({self.client_id})",
            ip=ip,
            permissions=frozenset(f"ability:{a}" for a in self.abilities),
        )


@dataclass(frozen=True)
class CredentialView:
    """A credential as operators see it: never its secret (only its digest is stored)."""

    id: int
    name: str
    client_id: str
    created_at: datetime
    revoked_at: datetime | None
    abilities: tuple[str, ...] = ("introspect",)

    @property
    def status(self) -> str:
        return "revoked" if self.revoked_at is not None else "active"


def _abilities(row: ServiceCredential) -> tuple[str, ...]:
    held = set((row.abilities or "introspect").split(","))
    return tuple(a for a in ABILITIES if a in held)


def _view(row: ServiceCredential) -> CredentialView:
    return CredentialView(row.id, row.name, row.client_id, row.created_at, row.revoked_at, _abilities(row))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


class CredentialService:
    """Service credentials belong to the deployment, not to a tenant: the CLI (an operator) manages
    them, and in the API so may an admin of the operator's own tenant (``KBAI_OPERATOR_TENANT``): a
    session holding every permission there. Nobody else may even list them."""

    def __init__(
        self, db: Database, clock: Clock, catalog: Catalog | None = None, operator_tenant: str | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self.catalog = catalog
        self.operator_tenant = operator_tenant

    def _authorize(self, actor: Actor) -> None:
        if actor.kind == "operator":
            return
        if actor.kind == "user" and self.operator_tenant and self.catalog is not None:
            everything = {p.key for p in self.catalog.permissions}
            with self.db.read() as s:
                tenant_id = s.scalar(select(Tenant.id).where(Tenant.name == self.operator_tenant))
            if tenant_id is not None and actor.tenant_id == tenant_id and everything <= actor.permissions:
                return
        raise KbaiError(errors.OPERATORS_ONLY)

    def list(self, actor: Actor) -> list[CredentialView]:
        """Every credential, active and revoked, oldest first."""
        self._authorize(actor)
        with self.db.read() as s:
            return [_view(row) for row in s.scalars(select(ServiceCredential).order_by(ServiceCredential.id))]

    def revoke(self, actor: Actor, client_id: str) -> CredentialView:
        """Stop a credential at once (introspection answers it 401 ``invalid_client``); idempotent."""
        self._authorize(actor)
        if not client_id or len(client_id) > 64 or "\x00" in client_id:
            raise KbaiError(errors.NOT_FOUND, what="Service credential")
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            row = s.scalar(select(ServiceCredential).where(ServiceCredential.client_id == client_id))
            if row is None:
                raise KbaiError(errors.NOT_FOUND, what="Service credential")
            if row.revoked_at is None:
                row.revoked_at = now
                audit.record(
                    s,
                    actor,
                    "service_credential.revoke",
                    at=now,
                    target_type="service_credential",
                    target_id=row.id,
                    details={"name": row.name, "client_id": row.client_id},
                )
            return _view(row)

    def create(self, actor: Actor, name: str, abilities: object = ("introspect",)) -> tuple[Credential, str]:
        """A new credential; returns it with its secret, which is never shown again."""
        self._authorize(actor)
        name = clean_name(name, "credential name")
        allowed = clean_abilities(abilities)
        client_id = "kbai_sc_" + secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            if s.scalar(select(ServiceCredential.id).where(ServiceCredential.name == name)) is not None:
                raise KbaiError(errors.ALREADY_EXISTS, what=f"A service credential named '{name}'")
            row = ServiceCredential(
                name=name,
                client_id=client_id,
                secret_digest=_digest(secret),
                created_at=now,
                abilities=",".join(allowed),
            )
            s.add(row)
            s.flush()
            audit.record(
                s,
                actor,
                "service_credential.create",
                at=now,
                target_type="service_credential",
                target_id=row.id,
                details={"name": name, "client_id": client_id, "abilities": list(allowed)},
            )
            return Credential(row.id, name, client_id, allowed), secret

    def authenticate(self, client_id: str, secret: str) -> Credential | None:
        if not client_id or not secret or len(client_id) > 64 or len(secret) > 200 or "\x00" in client_id:
            return None  # (NUL: PostgreSQL would refuse the lookup itself, a 422 instead of invalid_client)
        with self.db.read() as s:
            row = s.scalar(select(ServiceCredential).where(ServiceCredential.client_id == client_id))
        expected = row.secret_digest if row is not None else _digest("no such credential")
        ok = hmac.compare_digest(expected, _digest(secret))
        if row is None or not ok or row.revoked_at is not None:
            return None
        return Credential(row.id, row.name, row.client_id, _abilities(row))

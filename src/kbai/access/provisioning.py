"""SCIM provisioning credentials: a tenant's secret (``kbai_scim_...``) that its identity provider sends as a
Bearer token to ``/scim/v2``. Only the SHA-256 digest is stored; a credential reaches its own tenant alone.

Who may manage them: an operator (``kbai scim-token create --tenant NAME``), or a signed-in member holding
every permission of the tenant (SPEC: a credential acts with operator trust inside the tenant, so only
someone who already holds everything there may make one)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from kbai import errors
from kbai import tokenformat as fmt
from kbai.access.catalog import Catalog
from kbai.clock import Clock, utc_seconds
from kbai.errors import KbaiError
from kbai.store import Database, audit
from kbai.store.audit import Actor
from kbai.store.models import ProvisioningCredential, Tenant
from kbai.validate import clean_name

# last_used_at is written at most this often per credential: a sync of thousands of users is not
# thousands of extra writes.
_TOUCH_EVERY = timedelta(seconds=60)
MAX_PER_TENANT = 20


@dataclass(frozen=True)
class ProvisioningView:
    """A credential as admins see it: never its secret."""

    id: int
    tenant_id: int
    name: str
    prefix: str
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def status(self) -> str:
        return "revoked" if self.revoked_at is not None else "active"

    def actor(self, ip: str | None = None) -> Actor:
        """Who SCIM changes are audited as: this credential, with operator trust in its tenant alone."""
        return Actor(kind="scim", tenant_id=self.tenant_id, email=f"{self.name} ({self.prefix}…)", ip=ip)


def _view(row: ProvisioningCredential) -> ProvisioningView:
    return ProvisioningView(
        row.id, row.tenant_id, row.name, row.prefix, row.created_at, row.created_by, row.last_used_at, row.revoked_at
    )


class ProvisioningCredentials:
    def __init__(self, db: Database, clock: Clock, catalog: Catalog) -> None:
        self.db = db
        self.clock = clock
        self.catalog = catalog

    def _authorize(self, actor: Actor, tenant_id: int) -> None:
        if actor.kind == "operator":
            return
        if actor.kind == "user" and actor.tenant_id == tenant_id and self.catalog.keys <= actor.permissions:
            return
        raise KbaiError(errors.SCIM_CREDENTIAL_NEEDS_ALL)

    def tenant_id(self, name: str) -> int:
        with self.db.read() as s:
            found = s.scalar(select(Tenant.id).where(Tenant.name == name.strip()))
        if found is None:
            raise KbaiError(errors.NOT_FOUND, what=f"Tenant '{name}'")
        return found

    def create(self, actor: Actor, tenant_id: int, name: str) -> tuple[ProvisioningView, str]:
        """A new credential for ``tenant_id``; returns it with its secret, which is never shown again."""
        self._authorize(actor, tenant_id)
        name = clean_name(name, "credential name")
        secret = fmt.mint_scim()
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            if s.get(Tenant, tenant_id) is None:
                raise KbaiError(errors.NOT_FOUND, what="Tenant")
            s.scalar(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
            rows = list(
                s.scalars(
                    select(ProvisioningCredential).where(
                        ProvisioningCredential.tenant_id == tenant_id, ProvisioningCredential.revoked_at.is_(None)
                    )
                )
            )
            if any(r.name == name for r in rows):
                raise KbaiError(errors.ALREADY_EXISTS, what=f"An active provisioning credential named '{name}'")
            if len(rows) >= MAX_PER_TENANT:
                raise KbaiError(
                    errors.VALIDATION,
                    detail=f"A tenant has at most {MAX_PER_TENANT} active provisioning "
                    "credentials: revoke one you no longer use first.",
                )
            row = ProvisioningCredential(
                tenant_id=tenant_id,
                name=name,
                prefix=secret[: fmt.SCIM_DISPLAY_PREFIX_LENGTH],
                secret_digest=fmt.report_hash(secret),
                created_at=now,
                created_by=actor.label[:254],
            )
            s.add(row)
            s.flush()
            audit.record(
                s,
                actor,
                "provisioning_credential.create",
                at=now,
                target_type="provisioning_credential",
                target_id=row.id,
                tenant_id=tenant_id,
                details={"name": name, "prefix": row.prefix},
            )
            return _view(row), secret

    def list(self, actor: Actor, tenant_id: int) -> list[ProvisioningView]:
        """Every credential of the tenant, active first, newest first."""
        self._authorize(actor, tenant_id)
        with self.db.read() as s:
            rows = s.scalars(
                select(ProvisioningCredential)
                .where(ProvisioningCredential.tenant_id == tenant_id)
                .order_by(ProvisioningCredential.id.desc())
            )
            views = [_view(r) for r in rows]
        return sorted(views, key=lambda v: v.revoked_at is not None)

    def revoke(self, actor: Actor, tenant_id: int, credential_id: int) -> ProvisioningView:
        """Stop a credential at once (its next SCIM request is 401); idempotent."""
        self._authorize(actor, tenant_id)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            row = s.get(ProvisioningCredential, credential_id)
            if row is None or row.tenant_id != tenant_id:
                raise KbaiError(errors.NOT_FOUND, what="Provisioning credential")
            if row.revoked_at is None:
                row.revoked_at = now
                audit.record(
                    s,
                    actor,
                    "provisioning_credential.revoke",
                    at=now,
                    target_type="provisioning_credential",
                    target_id=row.id,
                    tenant_id=tenant_id,
                    details={"name": row.name, "prefix": row.prefix},
                )
            return _view(row)

    def authenticate(self, secret: str | None) -> ProvisioningView | None:
        """The active credential ``secret`` is, or None. A well-formed secret costs one indexed lookup."""
        if not fmt.is_scim_credential(secret):
            return None
        assert secret is not None
        digest = fmt.report_hash(secret)
        with self.db.read() as s:
            row = s.scalar(select(ProvisioningCredential).where(ProvisioningCredential.secret_digest == digest))
            if row is None or not hmac.compare_digest(row.secret_digest, digest) or row.revoked_at is not None:
                return None
            view = _view(row)
        now = utc_seconds(self.clock.now())
        if view.last_used_at is None or now - view.last_used_at >= _TOUCH_EVERY:
            with self.db.write() as s:
                fresh = s.get(ProvisioningCredential, view.id)
                if fresh is not None:
                    fresh.last_used_at = now
        return view

    def revoke_leaked(self, actor: Actor, reporter: str, secrets: Iterable[str]) -> set[str]:
        """Revoke every provisioning credential among ``secrets`` (a leak report); returns the digests of ours
        (revoked now or before). Audited in the credential's tenant."""
        digests = {fmt.report_hash(x) for x in secrets if fmt.is_scim_credential(x)}
        if not digests:
            return set()
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            rows = list(
                s.scalars(
                    select(ProvisioningCredential).where(ProvisioningCredential.secret_digest.in_(sorted(digests)))
                )
            )
            for row in rows:
                if row.revoked_at is None:
                    row.revoked_at = now
                    audit.record(
                        s,
                        actor,
                        "provisioning_credential.leak_report",
                        at=now,
                        target_type="provisioning_credential",
                        target_id=row.id,
                        tenant_id=row.tenant_id,
                        details={"name": row.name, "prefix": row.prefix, "reporter": reporter},
                    )
            return {r.secret_digest for r in rows}

"""The "Ask an admin" flow: a user who lacks a permission asks for it; the tenant's admins see and grant it.

A request stays open until an admin grants the permission on one of the requester's roles or
dismisses it. One open request per user and permission: asking again changes nothing. A request
whose requester has since got the permission (or was deactivated) no longer shows as pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbai import audit, errors
from kbai.access.catalog import Catalog
from kbai.access.service import ADMIN, AccessService, permissions_of, require
from kbai.audit import Actor
from kbai.clock import utc_seconds
from kbai.errors import KbaiError
from kbai.store.models import AdminRequest, Role, User, UserRole
from kbai.validate import clean_name

MAX_NOTE = 300


@dataclass(frozen=True)
class RequestView:
    id: int
    user_id: int
    email: str
    permission: str
    label: str
    created_at: datetime
    message: str | None
    # The requester's roles an admin may grant on: (id, name), the built-in Admin role excluded.
    roles: list[tuple[int, str]]


class AdminRequests:
    def __init__(self, access: AccessService) -> None:
        self.access = access
        self.db = access.db
        self.clock = access.clock
        self.catalog: Catalog = access.catalog

    def ask(self, actor: Actor, permission: str, message: str | None = None) -> bool:
        """Record a request (and audit it). False when the same request is already open."""
        if actor.kind != "user" or actor.user_id is None or actor.tenant_id is None:
            raise KbaiError(errors.SESSION_REQUIRED, action="ask an admin")
        if permission not in self.catalog:
            raise KbaiError(errors.UNKNOWN_PERMISSION, permission=str(permission)[:100])
        note = clean_name(message, "note", MAX_NOTE) if message and message.strip() else None
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            user = s.scalar(select(User).where(User.id == actor.user_id).with_for_update())
            if user is None or not user.active:
                raise KbaiError(errors.USER_INACTIVE)
            if permission in permissions_of(s, user, self.catalog):
                return False
            if self._open(s, user.id, permission) is not None:
                return False
            row = AdminRequest(tenant_id=user.tenant_id, user_id=user.id, permission=permission,
                               created_at=now, resolved_at=None, message=note)
            s.add(row)
            s.flush()
            audit.record(s, actor, "admin_request.create", at=now, target_type="admin_request", target_id=row.id,
                         tenant_id=user.tenant_id,
                         details={"email": user.email, "permission": permission, "message": note})
        return True

    def asked_at(self, user_id: int, permission: str) -> datetime | None:
        """When the user's open request for ``permission`` was made, or None."""
        with self.db.read() as s:
            row = self._open(s, user_id, permission)
            return row.created_at if row is not None else None

    def pending(self, actor: Actor) -> list[RequestView]:
        """Open requests of the actor's tenant, oldest first. For people who see roles or users."""
        if actor.kind != "operator" and not {"roles.read", "users.read"} & actor.permissions:
            raise KbaiError(errors.FORBIDDEN, permission="roles.read", action="see requests from your team")
        out: list[RequestView] = []
        with self.db.read() as s:
            rows = s.execute(
                select(AdminRequest, User)
                .join(User, User.id == AdminRequest.user_id)
                .where(AdminRequest.tenant_id == actor.tenant_id, AdminRequest.resolved_at.is_(None))
                .order_by(AdminRequest.id)
            ).all()
            for req, user in rows:
                if not user.active or req.permission in permissions_of(s, user, self.catalog):
                    continue
                perm = self.catalog.get(req.permission)
                out.append(RequestView(
                    id=req.id, user_id=user.id, email=user.email, permission=req.permission,
                    label=perm.label if perm else req.permission, created_at=req.created_at,
                    message=req.message, roles=self._grantable_roles(s, user.id),
                ))
        return out

    def grant(self, actor: Actor, request_id: int, role_id: int) -> str:
        """Add the requested permission to ``role_id`` (one of the requester's roles). Returns the role name."""
        with self.db.read() as s:
            req = self._in_scope(s, actor, request_id)
            held = {rid for rid, _ in self._grantable_roles(s, req.user_id)}
            permission = req.permission
        if role_id not in held:
            raise KbaiError(errors.NOT_FOUND, what="Role")
        role = self.access.get_role(actor, role_id)
        self.access.update_role(actor, role_id, [*role.permissions, permission])
        self._resolve(req.user_id, permission)
        return role.name

    def dismiss(self, actor: Actor, request_id: int) -> None:
        """Close a request without granting it (needs roles.manage, like granting)."""
        with self.db.read() as s:
            req = self._in_scope(s, actor, request_id)
        require(actor, "roles.manage", "answer requests", req.tenant_id)
        self._resolve(req.user_id, req.permission)

    # ---- helpers -------------------------------------------------------------------------
    @staticmethod
    def _open(s: Session, user_id: int, permission: str) -> AdminRequest | None:
        return s.scalar(select(AdminRequest).where(
            AdminRequest.user_id == user_id, AdminRequest.permission == permission,
            AdminRequest.resolved_at.is_(None)).limit(1))

    @staticmethod
    def _grantable_roles(s: Session, user_id: int) -> list[tuple[int, str]]:
        rows = s.execute(
            select(Role.id, Role.name).join(UserRole, UserRole.role_id == Role.id)
            .where(UserRole.user_id == user_id, (Role.builtin.is_(None)) | (Role.builtin != ADMIN))
            .order_by(Role.name)
        ).all()
        return [(rid, name) for rid, name in rows]

    @staticmethod
    def _in_scope(s: Session, actor: Actor, request_id: int) -> AdminRequest:
        req = s.get(AdminRequest, request_id)
        if req is None or req.resolved_at is not None or (
                actor.kind != "operator" and req.tenant_id != actor.tenant_id):
            raise KbaiError(errors.NOT_FOUND, what="Request")
        return req

    def _resolve(self, user_id: int, permission: str) -> None:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            for req in s.scalars(select(AdminRequest).where(
                    AdminRequest.user_id == user_id, AdminRequest.permission == permission,
                    AdminRequest.resolved_at.is_(None))):
                req.resolved_at = now

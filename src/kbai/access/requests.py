"""The "Ask an admin" flow: a user who lacks a permission asks for it; the tenant's admins see and grant it.

A request stays open until the requester holds the permission or an admin dismisses it. One open
request per user and permission: asking again changes nothing. However the requester comes to hold
it (granted from the request, the permission checked on their role, or another role given to them),
the request is resolved and the requester is told: an in-app notification with a link to API Keys,
and an email when SMTP is set (:meth:`AdminRequests.resolve_granted`, called by ``AccessService``
after each role or role-assignment change). A request whose requester was deactivated no longer
shows as pending.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from kbai import errors
from kbai.access.catalog import MANAGE_TOKENS, Catalog
from kbai.access.service import ADMIN, AccessService, permissions_of, require
from kbai.clock import utc_seconds
from kbai.delivery.notifications import NewNotification, Notifications
from kbai.errors import KbaiError
from kbai.store import audit
from kbai.store.audit import Actor
from kbai.store.models import AdminRequest, Role, RolePermission, User, UserRole
from kbai.validate import clean_name

MAX_NOTE = 300
ACCESS_GRANTED = "access.granted"
API_KEYS_PATH = "/system-settings/api-keys"
log = logging.getLogger("kbai.requests")


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
    def __init__(self, access: AccessService, notifications: Notifications | None = None) -> None:
        self.access = access
        self.db = access.db
        self.clock = access.clock
        self.catalog: Catalog = access.catalog
        self.notifications = notifications

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
            row = AdminRequest(
                tenant_id=user.tenant_id,
                user_id=user.id,
                permission=permission,
                created_at=now,
                resolved_at=None,
                message=note,
            )
            s.add(row)
            s.flush()
            audit.record(
                s,
                actor,
                "admin_request.create",
                at=now,
                target_type="admin_request",
                target_id=row.id,
                tenant_id=user.tenant_id,
                details={"email": user.email, "permission": permission, "message": note},
            )
        return True

    def asked_at(self, user_id: int, permission: str) -> datetime | None:
        """When the user's open request for ``permission`` was made, or None."""
        with self.db.read() as s:
            row = self._open(s, user_id, permission)
            return row.created_at if row is not None else None

    def open_requests(self, user_id: int) -> dict[str, datetime]:
        """The user's open requests: permission -> when they asked."""
        with self.db.read() as s:
            rows = s.execute(
                select(AdminRequest.permission, AdminRequest.created_at)
                .where(AdminRequest.user_id == user_id, AdminRequest.resolved_at.is_(None))
                .order_by(AdminRequest.id)
            ).all()
        return {permission: created for permission, created in rows}

    def resolve_granted(self, tenant_id: int) -> int:
        """Resolve every open request in the tenant whose requester now holds the permission, and tell each
        requester (in-app, and by email through the notification senders). Returns how many were resolved.

        Runs after the change that granted it was committed; a failure here is logged and never undoes
        that change (the request then stays open, but no longer shows as pending).
        """
        try:
            return self._resolve_granted(tenant_id)
        except Exception as exc:  # noqa: BLE001 - the role change is committed; telling people must not undo it
            log.error("resolving granted requests in tenant %d failed: %s", tenant_id, type(exc).__name__)
            return 0

    def _resolve_granted(self, tenant_id: int) -> int:
        now = utc_seconds(self.clock.now())
        added = []
        with self.db.write() as s:
            rows = s.execute(
                select(AdminRequest, User)
                .join(User, User.id == AdminRequest.user_id)
                .where(AdminRequest.tenant_id == tenant_id, AdminRequest.resolved_at.is_(None))
                .order_by(AdminRequest.id)
                .with_for_update(of=AdminRequest)
            ).all()
            held_by: dict[int, frozenset[str]] = {}
            granted: list[tuple[AdminRequest, User]] = []
            for req, user in rows:
                if user.id not in held_by:
                    held_by[user.id] = permissions_of(s, user, self.catalog)
                if user.active and req.permission in held_by[user.id]:
                    req.resolved_at = now
                    granted.append((req, user))
            if granted and self.notifications is not None:
                added = self.notifications.add(s, [self._granted_notice(s, req, user) for req, user in granted], now)
        if added and self.notifications is not None:
            self.notifications.deliver(added)
        return len(granted)

    def _granted_notice(self, s: Session, req: AdminRequest, user: User) -> NewNotification:
        label = self.catalog.label(req.permission)
        roles = [name for _rid, name in self._roles_holding(s, user.id, req.permission)]
        where = f" Your role {' and '.join(roles)} has it now." if roles else ""
        if req.permission == MANAGE_TOKENS:
            next_step = "Open System Settings → API Keys to create your first token."
        else:
            next_step = "Tokens you create can carry it now: open System Settings → API Keys."
        return NewNotification(
            user_id=user.id,
            tenant_id=user.tenant_id,
            email=user.email,
            kind=ACCESS_GRANTED,
            title=f"You have {label} now"[:200],
            body=f"Your request for {label} ({req.permission}) was granted.{where} {next_step}",
            details={"permission": req.permission, "request_id": req.id, "link": API_KEYS_PATH},
        )

    def _roles_holding(self, s: Session, user_id: int, permission: str) -> list[tuple[int, str]]:
        rows = s.execute(
            select(Role.id, Role.name, Role.builtin)
            .join(UserRole, UserRole.role_id == Role.id)
            .where(UserRole.user_id == user_id)
            .order_by(Role.name)
        ).all()
        out = []
        for rid, name, builtin in rows:
            if (
                builtin == ADMIN
                or s.scalar(
                    select(RolePermission.role_id).where(
                        RolePermission.role_id == rid, RolePermission.permission == permission
                    )
                )
                is not None
            ):
                out.append((rid, name))
        return out

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
                out.append(
                    RequestView(
                        id=req.id,
                        user_id=user.id,
                        email=user.email,
                        permission=req.permission,
                        label=perm.label if perm else req.permission,
                        created_at=req.created_at,
                        message=req.message,
                        roles=self._grantable_roles(s, user.id),
                    )
                )
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
        return s.scalar(
            select(AdminRequest)
            .where(
                AdminRequest.user_id == user_id,
                AdminRequest.permission == permission,
                AdminRequest.resolved_at.is_(None),
            )
            .limit(1)
        )

    @staticmethod
    def _grantable_roles(s: Session, user_id: int) -> list[tuple[int, str]]:
        rows = s.execute(
            select(Role.id, Role.name)
            .join(UserRole, UserRole.role_id == Role.id)
            .where(UserRole.user_id == user_id, (Role.builtin.is_(None)) | (Role.builtin != ADMIN))
            .order_by(Role.name)
        ).all()
        return [(rid, name) for rid, name in rows]

    @staticmethod
    def _in_scope(s: Session, actor: Actor, request_id: int) -> AdminRequest:
        req = s.get(AdminRequest, request_id)
        if (
            req is None
            or req.resolved_at is not None
            or (actor.kind != "operator" and req.tenant_id != actor.tenant_id)
        ):
            raise KbaiError(errors.NOT_FOUND, what="Request")
        return req

    def _resolve(self, user_id: int, permission: str) -> None:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            for req in s.scalars(
                select(AdminRequest).where(
                    AdminRequest.user_id == user_id,
                    AdminRequest.permission == permission,
                    AdminRequest.resolved_at.is_(None),
                )
            ):
                req.resolved_at = now

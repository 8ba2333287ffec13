"""Tenants, users, roles and limits: every rule about who may do what, and the audit of each change."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kbai import errors
from kbai.access.catalog import Catalog
from kbai.access.passwords import MIN_LENGTH, Passwords
from kbai.clock import Clock, utc_seconds
from kbai.errors import KbaiError
from kbai.store import Database, audit
from kbai.store.audit import Actor
from kbai.store.models import Identity, Invitation, LoginSession, Person, Role, RolePermission, Tenant, User, UserRole
from kbai.validate import clean_email, clean_external_id, clean_name, clean_password

ADMIN = "admin"
MEMBER = "member"
MAX_LIMIT = 100_000
INVITATION_TTL = timedelta(hours=72)
INVITATION_PATH = "/invitations/"


@dataclass(frozen=True)
class RoleView:
    id: int
    name: str
    permissions: list[str]
    builtin: bool


@dataclass(frozen=True)
class UserView:
    id: int
    tenant_id: int
    email: str
    roles: list[str]
    active: bool
    max_active_tokens: int | None
    external_id: str | None = None
    person_id: int | None = None
    # Added by invitation and not in yet: the link was not used (the Users page says "Invited").
    invited: bool = False


@dataclass(frozen=True)
class MembershipView:
    """One of a person's memberships, as the tenant picker shows it."""

    user_id: int
    tenant_id: int
    tenant_name: str
    tenant_external_id: str | None
    active: bool


@dataclass(frozen=True)
class InvitationView:
    """What an invitation link leads to (its holder sees this before accepting)."""

    invitation_id: int
    user_id: int
    person_id: int
    email: str
    tenant_id: int
    tenant_name: str
    # True: the person has no password yet and sets one here; False: they confirm with their own login.
    sets_password: bool
    # False with sets_password False: someone who signs in with the product's OpenID provider (that accepts it).
    has_password: bool = True


@dataclass(frozen=True)
class Invited:
    view: UserView
    path: str  # INVITATION_PATH + the one-time secret (shown once, stored only as its digest)
    expires_at: datetime
    new_person: bool  # never shown to the inviter: the answer is the same either way


def pending_invitation() -> Any:
    """True for a membership (``users`` row) whose invitation is not accepted yet: a person added to another
    tenant enters it only through that tenant's link (or the product's sign-in), never by a password alone."""
    return exists(select(Invitation.id).where(Invitation.user_id == User.id, Invitation.accepted_at.is_(None)))


def invitation_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Arrival:
    """A person the host product's identity provider vouches for, as the access rules see them.

    ``roles`` None means the provider said nothing about roles (they stay as they are; Member for a
    new user); a list, even empty, is the exact set of role names the person holds from now on."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    tenant_external_id: str
    tenant_name: str | None = None
    create_tenant: bool = False
    user_external_id: str | None = None
    roles: list[str] | None = None


@dataclass(frozen=True)
class Admitted:
    user_id: int
    tenant_id: int
    email: str
    created_user: bool = False
    created_tenant: bool = False
    linked: str | None = None  # how an existing user was linked: "external_id" or "email"
    roles_changed: bool = False
    unknown_roles: list[str] = field(default_factory=list)


def permissions_of(session: Session, user: User, catalog: Catalog) -> frozenset[str]:
    """What ``user`` may do now: the union of their roles, cut to the catalog. Inactive users hold nothing."""
    if not user.active:
        return frozenset()
    return role_permissions(session, [user.id], catalog)[user.id]


def role_permissions(session: Session, user_ids: Iterable[int], catalog: Catalog) -> dict[int, frozenset[str]]:
    """What each user's roles grant, whether or not the user is active (what a reactivation gives back)."""
    ids = list(user_ids)
    held: dict[int, set[str]] = {uid: set() for uid in ids}
    admins: set[int] = set()
    if ids:
        rows = session.execute(
            select(UserRole.user_id, Role.builtin, RolePermission.permission)
            .join(Role, Role.id == UserRole.role_id)
            .outerjoin(RolePermission, RolePermission.role_id == Role.id)
            .where(UserRole.user_id.in_(ids))
        ).all()
        for uid, builtin, permission in rows:
            if builtin == ADMIN:
                admins.add(uid)
            elif permission is not None:
                held[uid].add(permission)
    return {uid: catalog.keys if uid in admins else frozenset(held[uid] & catalog.keys) for uid in ids}


def holders_of(session: Session, tenant_id: int, permission: str, catalog: Catalog) -> list[tuple[int, str]]:
    """(membership id, email) of every active member of ``tenant_id`` who holds ``permission`` now, by id."""
    members = session.execute(
        select(User.id, User.email).where(User.tenant_id == tenant_id, User.active.is_(True)).order_by(User.id)
    ).all()
    held = role_permissions(session, [m[0] for m in members], catalog)
    return [(int(uid), str(email)) for uid, email in members if permission in held[uid]]


def permissions_from(rows: Iterable[tuple[str | None, str | None]], catalog: Catalog) -> frozenset[str]:
    """The permissions that (role kind, permission) rows of one active user's roles grant, cut to the catalog.

    The one place the rule lives: the built-in Admin role holds every permission, others what they list.
    """
    held: set[str] = set()
    for builtin, permission in rows:
        if builtin == ADMIN:
            return catalog.keys
        if permission is not None:
            held.add(permission)
    return frozenset(held & catalog.keys)


def trusted_in(actor: Actor, tenant_id: int | None) -> bool:
    """Operator trust short of the CLI: a SCIM provisioning credential in its own tenant (SPEC: it may assign
    any role, Admin included, and nothing anywhere else), or a service credential an operator allowed
    ``tenants`` (the operator API, in every tenant)."""
    if actor.kind == "service":
        return "ability:tenants" in actor.permissions
    return actor.kind == "scim" and actor.tenant_id is not None and (tenant_id is None or tenant_id == actor.tenant_id)


def require(actor: Actor, permission: str, action: str, tenant_id: int | None = None) -> None:
    """Refuse unless ``actor`` holds ``permission`` in ``tenant_id`` (operators hold everything)."""
    if actor.kind == "operator" or trusted_in(actor, tenant_id):
        return
    if permission not in actor.permissions:
        if actor.kind == "token":
            raise errors.insufficient_scope([permission])
        raise KbaiError(errors.FORBIDDEN, permission=permission, action=action)
    if tenant_id is not None and actor.tenant_id != tenant_id:
        raise KbaiError(errors.FORBIDDEN, permission=permission, action=action)


def may_manage(actor: Actor, permission: str, action: str, tenant_id: int | None = None) -> None:
    """Refuse a change to users or roles unless an operator, or a signed-in person holding ``permission``
    in ``tenant_id``, makes it. Never a token: a login it created or a role it raised would outlive it."""
    if actor.kind == "operator" or trusted_in(actor, tenant_id):
        return
    if actor.kind != "user":
        raise KbaiError(errors.MANAGE_NEEDS_SESSION, action=action)
    require(actor, permission, action, tenant_id)


class AccessService:
    def __init__(self, db: Database, clock: Clock, catalog: Catalog, passwords: Passwords) -> None:
        self.db = db
        self.clock = clock
        self.catalog = catalog
        self.passwords = passwords
        # Called after a commit that may change what any token may do (roles, deactivation).
        self.listeners: list[Callable[[], None]] = []
        # Called with a tenant id after a commit that may have given someone there a permission (a role's
        # permissions or a person's roles changed): answered "Ask an admin" requests are resolved from here.
        self.grant_listeners: list[Callable[[int], object]] = []  # what a listener returns is not used
        # Where invitation emails leave (kbai.delivery.outbox.Outbox, set by kbai.services); None: no email.
        self.outbox: Any = None

    # ---- reading -------------------------------------------------------------------------
    def permissions(self, session: Session, user: User) -> frozenset[str]:
        return permissions_of(session, user, self.catalog)

    def membership_permissions(self, user_id: int) -> frozenset[str] | None:
        """What membership ``user_id`` may do now; None when it is gone or deactivated."""
        with self.db.read() as s:
            user = s.get(User, user_id)
            if user is None or not user.active:
                return None
            return permissions_of(s, user, self.catalog)

    def person_by_email(self, email: str) -> Person | None:
        with self.db.read() as s:
            return s.scalar(select(Person).where(Person.email == email.strip().lower()))

    def user_by_email(self, email: str, tenant_id: int | None = None) -> User | None:
        """The membership of the person with this email: in ``tenant_id`` when given, else the one they used
        last (or their first). None when there is no such person or membership."""
        with self.db.read() as s:
            person = s.scalar(select(Person).where(Person.email == email.strip().lower()))
            if person is None:
                return None
            return self._membership(s, person, tenant_id)

    @staticmethod
    def _membership(
        s: Session, person: Person, tenant_id: int | None = None, *, active_only: bool = False
    ) -> User | None:
        query = select(User).where(User.person_id == person.id)
        if active_only:  # (what a login may enter: active, and not waiting for its invitation)
            query = query.where(User.active.is_(True), ~pending_invitation())
        if tenant_id is not None:
            return s.scalar(query.where(User.tenant_id == tenant_id))
        rows = list(s.scalars(query.order_by(User.id)))
        return next((u for u in rows if u.tenant_id == person.last_tenant_id), rows[0] if rows else None)

    def memberships(self, person_id: int) -> list[MembershipView]:
        """Every membership of a person, by tenant name (inactive ones too: the picker leaves those out)."""
        with self.db.read() as s:
            rows = s.execute(
                select(User.id, Tenant.id, Tenant.name, Tenant.external_id, User.active, pending_invitation())
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(User.person_id == person_id)
                .order_by(Tenant.name)
            ).all()
        # A membership waiting for its invitation is not one the person may enter yet.
        return [
            MembershipView(uid, tid, name, ext, bool(active) and not pending)
            for uid, tid, name, ext, active, pending in rows
        ]

    def find_membership(self, person_id: int, tenant: str | int) -> User | None:
        """The person's active membership in the tenant given by id, name or external id (None: not a member;
        the answer is the same whether or not such a tenant exists)."""
        if isinstance(tenant, bool) or not isinstance(tenant, (int, str)):
            return None
        ref = tenant.strip() if isinstance(tenant, str) else tenant
        if isinstance(ref, str) and (not 1 <= len(ref) <= 200 or "\x00" in ref):
            return None  # (PostgreSQL refuses NUL in a parameter: no tenant is called that anyway)
        as_id = (
            ref if isinstance(ref, int) else int(ref) if ref.isascii() and ref.isdigit() and len(ref) <= 10 else None
        )
        with self.db.read() as s:
            query = (
                select(User)
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(User.person_id == person_id, User.active.is_(True), ~pending_invitation())
            )
            found = None
            if as_id is not None and 1 <= as_id <= 2_147_483_647:
                found = s.scalar(query.where(Tenant.id == as_id))
            if found is None and isinstance(ref, str):
                found = s.scalar(query.where(Tenant.name == ref)) or s.scalar(query.where(Tenant.external_id == ref))
            return found

    def tenant_by_name(self, name: str) -> Tenant | None:
        with self.db.read() as s:
            return s.scalar(select(Tenant).where(Tenant.name == name.strip()))

    def user_view(self, session: Session, user: User) -> UserView:
        names = session.scalars(
            select(Role.name)
            .join(UserRole, UserRole.role_id == Role.id)
            .where(UserRole.user_id == user.id)
            .order_by(Role.name)
        ).all()
        return UserView(
            user.id,
            user.tenant_id,
            user.email,
            list(names),
            user.active,
            user.max_active_tokens,
            user.external_id,
            user.person_id,
        )

    def role_view(self, session: Session, role: Role) -> RoleView:
        if role.builtin == ADMIN:
            perms = [p.key for p in self.catalog.permissions]
        else:
            held = set(session.scalars(select(RolePermission.permission).where(RolePermission.role_id == role.id)))
            perms = [p.key for p in self.catalog.permissions if p.key in held]
        return RoleView(role.id, role.name, perms, role.builtin is not None)

    # ---- tenants -------------------------------------------------------------------------
    def create_tenant(
        self,
        actor: Actor,
        name: str,
        admin_email: str | None = None,
        admin_password: str | None = None,
        *,
        external_id: str | None = None,
    ) -> tuple[Tenant, User | None, str | None]:
        """A tenant with its built-in Admin and Member roles and its first admin.

        Without an admin email the tenant starts empty; it must then have an ``external_id``, and its
        first person to sign in through the product's OpenID provider becomes its admin."""
        name = clean_name(name, "tenant name")
        ext = None if external_id is None else clean_external_id(external_id, "external id")
        if admin_email is None and ext is None:
            raise KbaiError(
                errors.VALIDATION,
                detail="Give the tenant's first admin email, or an external id for a "
                "tenant whose people sign in with single sign-on.",
            )
        email = None if admin_email is None else clean_email(admin_email)
        generated = password_hash = None
        # A person who exists already (a member of another tenant) keeps their own password.
        if email is not None and self.person_by_email(email) is not None:
            if admin_password is not None:
                raise KbaiError(errors.PERSON_HAS_PASSWORD, email=email)
        elif email is not None:
            if admin_password is None:
                admin_password = generated = self.passwords.generate()
            clean_password(admin_password, MIN_LENGTH)
            password_hash = self.passwords.hash(admin_password)
        now = utc_seconds(self.clock.now())
        user = None
        try:
            with self.db.write() as s:
                if s.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
                    raise KbaiError(errors.ALREADY_EXISTS, what=f"Tenant '{name}'")
                if ext is not None and s.scalar(select(Tenant.id).where(Tenant.external_id == ext)) is not None:
                    raise KbaiError(errors.ALREADY_EXISTS, what=f"A tenant with external id '{ext}'")
                tenant, admin_role = self._new_tenant(s, actor, name, ext, now, admin=email)
                if email is not None:
                    person, created = self._person_for(s, email, password_hash, now)
                    if not created:
                        generated = None  # (created meanwhile by someone else: their password stands)
                    user = User(tenant_id=tenant.id, person_id=person.id, active=True, created_at=now)
                    s.add(user)
                    s.flush()
                    s.add(UserRole(user_id=user.id, role_id=admin_role.id))
                    audit.record(
                        s,
                        actor,
                        "user.create",
                        at=now,
                        target_type="user",
                        target_id=user.id,
                        tenant_id=tenant.id,
                        details={"email": email, "roles": ["Admin"]},
                    )
                    s.flush()
                    assert user.email == email  # (loaded now: the caller reads it after the session)
        except IntegrityError:
            raise KbaiError(errors.ALREADY_EXISTS, what=f"Tenant '{name}' or user '{email}'") from None
        return tenant, user, generated

    def rename_tenant(self, actor: Actor, tenant_id: int, name: str) -> Tenant:
        """A new name for a tenant (operators, and the operator API); audited."""
        if actor.kind != "operator" and not (actor.kind == "service" and trusted_in(actor, None)):
            raise KbaiError(errors.FORBIDDEN, permission="operator access", action="rename tenants")
        name = clean_name(name, "tenant name")
        now = utc_seconds(self.clock.now())
        try:
            with self.db.write() as s:
                tenant = s.get(Tenant, tenant_id)
                if tenant is None:
                    raise KbaiError(errors.NOT_FOUND, what="Tenant")
                if tenant.name != name:
                    if s.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
                        raise KbaiError(errors.ALREADY_EXISTS, what=f"Tenant '{name}'")
                    audit.record(
                        s,
                        actor,
                        "tenant.rename",
                        at=now,
                        target_type="tenant",
                        target_id=tenant.id,
                        tenant_id=tenant.id,
                        details={"from": tenant.name, "to": name},
                    )
                    tenant.name = name
                s.flush()
                s.expunge(tenant)
                return tenant
        except IntegrityError:
            raise KbaiError(errors.ALREADY_EXISTS, what=f"Tenant '{name}'") from None

    def tenant_by_external_id(self, external_id: str) -> Tenant | None:
        with self.db.read() as s:
            return s.scalar(select(Tenant).where(Tenant.external_id == external_id))

    def tenant_by_id(self, tenant_id: int) -> Tenant | None:
        with self.db.read() as s:
            return s.get(Tenant, tenant_id)

    def acting_for(self, membership_id: int, via: Actor) -> Actor:
        """The member as the rules see them when they act themselves, for a request ``via`` a service
        credential (the operator API issuing a token on their behalf); NOT_FOUND when there is none."""
        with self.db.read() as s:
            user = s.get(User, membership_id)
            if user is None:
                raise KbaiError(errors.NOT_FOUND, what="Membership")
            return Actor(
                kind="user",
                user_id=user.id,
                tenant_id=user.tenant_id,
                email=user.email,
                ip=via.ip,
                permissions=self.permissions(s, user),
                via=via.email,
            )

    @staticmethod
    def _new_tenant(
        s: Session, actor: Actor, name: str, external_id: str | None, now: datetime, admin: str | None = None
    ) -> tuple[Tenant, Role]:
        tenant = Tenant(name=name, created_at=now, external_id=external_id)
        s.add(tenant)
        s.flush()
        admin_role = Role(tenant_id=tenant.id, name="Admin", builtin=ADMIN, created_at=now)
        s.add_all([admin_role, Role(tenant_id=tenant.id, name="Member", builtin=MEMBER, created_at=now)])
        s.flush()
        details: dict[str, object] = {"name": name, "admin": admin}
        if external_id is not None:
            details["external_id"] = external_id
        audit.record(
            s,
            actor,
            "tenant.create",
            at=now,
            target_type="tenant",
            target_id=tenant.id,
            tenant_id=tenant.id,
            details=details,
        )
        return tenant, admin_role

    # ---- users ---------------------------------------------------------------------------
    def create_user(
        self,
        actor: Actor,
        tenant_id: int,
        email: str,
        password: str | None = None,
        roles: Sequence[str | int] = (),
        *,
        external_id: str | None = None,
        generate_password: bool = True,
    ) -> tuple[UserView, str | None]:
        """A membership in ``tenant_id`` with the named (or id-given) roles (Member when none are named), for the
        person with ``email``, who is created when there is none.

        A new person gets ``password``, or a generated one (returned) when ``generate_password``. An existing
        person (a member of another tenant) keeps their own password: none is generated, and giving one is
        refused. Emails are unique per person, not per tenant, so nothing here tells whether the person
        existed. :meth:`invite` is what the API and the pages use: it never sets or returns a password."""
        may_manage(actor, "users.manage", "create users", tenant_id)
        email = clean_email(email)
        ext = None if external_id is None else clean_external_id(external_id, "external id")
        exists = self.person_by_email(email) is not None
        if exists and password is not None:
            raise KbaiError(errors.PERSON_HAS_PASSWORD, email=email)
        generated = password_hash = None
        if not exists and (password is not None or generate_password):
            if password is None:
                password = generated = self.passwords.generate()
            clean_password(password, MIN_LENGTH)
            password_hash = self.passwords.hash(password)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            user = self._add_membership(s, actor, tenant_id, email, password_hash, roles, ext, now)
            if user.person_id is not None and password_hash is not None:
                person = s.get(Person, user.person_id)
                if person is not None and person.password_hash != password_hash:
                    generated = None  # (the person was created meanwhile by someone else: their password stands)
            view = self.user_view(s, user)
        return view, generated

    def invite(
        self,
        actor: Actor,
        tenant_id: int,
        email: str,
        roles: Sequence[str | int] = (),
        *,
        external_id: str | None = None,
        link_base: str = "",
    ) -> Invited:
        """Add the person with ``email`` to ``tenant_id`` (creating the person when there is none, without a
        password) and make a one-time invitation link (72 h), emailed to them when SMTP is set (``link_base``
        + the path). What the caller shows must not depend on ``new_person``: the API and the pages answer
        the same either way, so a tenant never learns who exists elsewhere."""
        may_manage(actor, "users.manage", "create users", tenant_id)
        email = clean_email(email)
        ext = None if external_id is None else clean_external_id(external_id, "external id")
        now = utc_seconds(self.clock.now())
        secret = secrets.token_urlsafe(32)
        with self.db.write() as s:
            new_person = s.scalar(select(Person.id).where(Person.email == email)) is None
            user = self._add_membership(s, actor, tenant_id, email, None, roles, ext, now)
            s.add(
                Invitation(
                    digest=invitation_digest(secret), user_id=user.id, created_at=now, expires_at=now + INVITATION_TTL
                )
            )
            view = self.user_view(s, user)
            tenant_name = s.scalar(select(Tenant.name).where(Tenant.id == tenant_id)) or ""
            outbox_id = None
            if self.outbox is not None and self.outbox.mail_enabled:
                outbox_id = self.outbox.add_email(
                    s,
                    event_id=f"invitation-{secrets.token_hex(8)}",
                    tenant_id=tenant_id,
                    user_id=user.id,
                    to=email,
                    subject=f"You were added to {tenant_name}",
                    event_type="invitation",
                    at=now,
                    body=f"{actor.email or 'An admin'} added you to {tenant_name}.\n\nOpen this link within 72 hours "
                    f"to {'choose your password' if new_person else 'confirm with your own login'}:\n"
                    f"{link_base}{INVITATION_PATH}{secret}\n",
                )
        if outbox_id is not None:
            self.outbox.after_commit([outbox_id])
        return Invited(view, INVITATION_PATH + secret, now + INVITATION_TTL, new_person)

    def _add_membership(
        self,
        s: Session,
        actor: Actor,
        tenant_id: int,
        email: str,
        password_hash: str | None,
        roles: Sequence[str | int],
        ext: str | None,
        now: datetime,
    ) -> User:
        tenant = s.get(Tenant, tenant_id)
        if tenant is None:
            raise KbaiError(errors.NOT_FOUND, what="Tenant")
        self._lock_tenant(s, tenant_id)
        held = self._held(s, actor, "users.manage", "create users", tenant_id)
        role_rows = self._roles(s, tenant_id, roles or ["Member"])
        self._assignable(s, held, role_rows)
        if (
            ext is not None
            and s.scalar(select(User.id).where(User.tenant_id == tenant_id, User.external_id == ext)) is not None
        ):
            raise KbaiError(errors.ALREADY_EXISTS, what=f"A user with external id '{ext}' in this tenant")
        person, _created = self._person_for(s, email, password_hash, now)
        if s.scalar(select(User.id).where(User.tenant_id == tenant_id, User.person_id == person.id)) is not None:
            raise KbaiError(errors.ALREADY_EXISTS, what=f"A user with email {email} in this tenant")
        user = User(tenant_id=tenant_id, person_id=person.id, active=True, created_at=now, external_id=ext)
        s.add(user)
        try:
            s.flush()
        except IntegrityError:  # the same person added to this tenant at the same moment
            raise KbaiError(errors.ALREADY_EXISTS, what=f"A user with email {email} in this tenant") from None
        s.add_all([UserRole(user_id=user.id, role_id=r.id) for r in role_rows])
        details: dict[str, object] = {"email": email, "roles": [r.name for r in role_rows]}
        if ext is not None:
            details["external_id"] = ext
        audit.record(
            s, actor, "user.create", at=now, target_type="user", target_id=user.id, tenant_id=tenant_id, details=details
        )
        s.flush()
        return user

    @staticmethod
    def _person_for(s: Session, email: str, password_hash: str | None, now: datetime) -> tuple[Person, bool]:
        """(the person with ``email``, whether they were created now, with ``password_hash``)."""
        person = s.scalar(select(Person).where(Person.email == email))
        if person is not None:
            return person, False
        person = Person(email=email, password_hash=password_hash, created_at=now)
        try:
            with s.begin_nested():
                s.add(person)
                s.flush()
        except IntegrityError:  # created at the same moment by another request
            person = s.scalar(select(Person).where(Person.email == email))
            if person is None:
                raise
            return person, False
        return person, True

    def invitation(self, secret: str) -> InvitationView:
        """The live invitation behind a link's secret, or NOT_FOUND (unknown, used, expired or its membership
        deactivated: all the same answer)."""
        if not isinstance(secret, str) or not 20 <= len(secret) <= 100 or not secret.isascii():
            raise KbaiError(errors.INVITATION_INVALID)
        now = self.clock.now()
        with self.db.read() as s:
            row = s.execute(
                select(Invitation, User, Person, Tenant.name)
                .join(User, User.id == Invitation.user_id)
                .join(Person, Person.id == User.person_id)
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(Invitation.digest == invitation_digest(secret))
            ).first()
        if row is None:
            raise KbaiError(errors.INVITATION_INVALID)
        inv, user, person, tenant_name = row
        if inv.accepted_at is not None or inv.expires_at <= now or not user.active:
            raise KbaiError(errors.INVITATION_INVALID)
        # A password may be chosen here only by someone who is nobody yet: no password, no sign-in identity, no
        # membership they have entered. Otherwise whoever holds this link (the inviting admin sees it) could take
        # over the person's other tenants.
        with self.db.read() as s:
            known = (
                s.scalar(select(Identity.id).where(Identity.person_id == person.id).limit(1)) is not None
                or s.scalar(
                    select(User.id)
                    .where(User.person_id == person.id, User.id != user.id, ~pending_invitation())
                    .limit(1)
                )
                is not None
            )
        return InvitationView(
            inv.id,
            user.id,
            person.id,
            person.email,
            user.tenant_id,
            tenant_name,
            person.password_hash is None and not known,
            person.password_hash is not None,
        )

    def accept_invitation(self, secret: str, password: str) -> InvitationView:
        """Use an invitation once: a person without a password sets ``password``; one with a password proves
        it is theirs (INVALID_CREDENTIALS otherwise, the invitation stays usable). The caller opens the session."""
        found = self.invitation(secret)
        if not isinstance(password, str) or len(password) > 1024:
            raise KbaiError(errors.INVALID_CREDENTIALS)
        new_hash = None
        if found.sets_password:
            clean_password(password, MIN_LENGTH)
            new_hash = self.passwords.hash(password)
        else:
            with self.db.read() as s:
                stored = s.scalar(select(Person.password_hash).where(Person.id == found.person_id))
            if stored is None:  # someone who signs in with the product's OpenID provider: that accepts it
                raise KbaiError(errors.INVITATION_NEEDS_SSO)
            if not self.passwords.verify(stored, password):
                raise KbaiError(errors.INVALID_CREDENTIALS)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            inv = s.get(Invitation, found.invitation_id, with_for_update=True)
            person = s.get(Person, found.person_id, with_for_update=True)
            if inv is None or inv.accepted_at is not None or person is None:
                raise KbaiError(errors.INVITATION_INVALID)
            if new_hash is not None:
                if (
                    person.password_hash is not None
                    or s.scalar(select(Identity.id).where(Identity.person_id == person.id).limit(1)) is not None
                ):  # known meanwhile: not replaced
                    raise KbaiError(errors.INVITATION_INVALID)
                person.password_hash = new_hash
            inv.accepted_at = now
            person.last_tenant_id = found.tenant_id
            audit.record(
                s,
                Actor(kind="user", user_id=found.user_id, tenant_id=found.tenant_id, email=found.email),
                "user.accept_invitation",
                at=now,
                target_type="user",
                target_id=found.user_id,
                tenant_id=found.tenant_id,
                details={"email": found.email, "password_set": new_hash is not None},
            )
        return found

    def list_users(self, actor: Actor, tenant_id: int) -> list[UserView]:
        require(actor, "users.read", "list users", tenant_id)
        with self.db.read() as s:
            users = s.scalars(select(User).where(User.tenant_id == tenant_id).order_by(User.id)).all()
            invited = set(s.scalars(select(User.id).where(User.tenant_id == tenant_id, pending_invitation())))
            return [replace(self.user_view(s, u), invited=u.id in invited) for u in users]

    def get_user(self, actor: Actor, user_id: int) -> UserView:
        with self.db.read() as s:
            user = s.get(User, user_id)
            if user is None or (actor.kind != "operator" and user.tenant_id != actor.tenant_id):
                raise KbaiError(errors.NOT_FOUND, what="User")
            require(actor, "users.read", "view users", user.tenant_id)
            return self.user_view(s, user)

    def set_user_roles(self, actor: Actor, user_id: int, roles: Sequence[str | int]) -> UserView:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            user = self._user_in_scope(s, actor, user_id)
            may_manage(actor, "users.manage", "change a user's roles", user.tenant_id)
            self._lock_tenant(s, user.tenant_id)
            held = self._held(s, actor, "users.manage", "change a user's roles", user.tenant_id)
            wanted = self._roles(s, user.tenant_id, roles)
            self._not_above(s, held, user, "change the roles of")
            self._assignable(s, held, wanted)
            was_admin = self._active_admin(s, user)
            for link in s.scalars(select(UserRole).where(UserRole.user_id == user.id)):
                s.delete(link)
            s.flush()
            s.add_all([UserRole(user_id=user.id, role_id=r.id) for r in wanted])
            s.flush()
            if was_admin:  # only taking Admin away can leave a tenant without one
                self._keep_an_admin(s, user.tenant_id)
            audit.record(
                s,
                actor,
                "user.roles",
                at=now,
                target_type="user",
                target_id=user.id,
                tenant_id=user.tenant_id,
                details={"email": user.email, "roles": sorted(r.name for r in wanted)},
            )
            view = self.user_view(s, user)
        self._changed()
        self._may_have_granted(view.tenant_id)
        return view

    def deactivate_user(
        self, actor: Actor, user_id: int, *, within: Callable[[Session, User], object] | None = None
    ) -> UserView:
        """Deactivated users can't log in, and their tokens stop working at once (they are not revoked).
        ``within`` runs in the same transaction once the actor may deactivate the user, before it happens
        (the hand-over of tokens to the tenant: when it raises, nothing changes)."""
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            user = self._user_in_scope(s, actor, user_id)
            may_manage(actor, "users.manage", "deactivate users", user.tenant_id)
            self._lock_tenant(s, user.tenant_id)
            held = self._held(s, actor, "users.manage", "deactivate users", user.tenant_id)
            self._not_above(s, held, user, "deactivate")
            if within is not None:
                within(s, user)
            if user.active:
                was_admin = self._active_admin(s, user)
                user.active = False
                user.deactivated_at = now
                s.flush()
                if was_admin:  # a tenant without an admin (one run by SSO or SCIM) may still lose a member
                    self._keep_an_admin(s, user.tenant_id)
                s.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
                audit.record(
                    s,
                    actor,
                    "user.deactivate",
                    at=now,
                    target_type="user",
                    target_id=user.id,
                    tenant_id=user.tenant_id,
                    details={"email": user.email},
                )
            view = self.user_view(s, user)
        self._changed()
        return view

    def reactivate_user(self, actor: Actor, user_id: int) -> UserView:
        """A deactivated user may log in again. Tokens that deactivation only stopped (not revoked, not
        expired) work again; revoked tokens stay revoked, and old sessions stay ended."""
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            user = self._user_in_scope(s, actor, user_id)
            may_manage(actor, "users.manage", "reactivate users", user.tenant_id)
            self._lock_tenant(s, user.tenant_id)
            held = self._held(s, actor, "users.manage", "reactivate users", user.tenant_id)
            self._not_above(s, held, user, "reactivate")
            changed = not user.active
            if changed:
                user.active = True
                user.deactivated_at = None
                audit.record(
                    s,
                    actor,
                    "user.reactivate",
                    at=now,
                    target_type="user",
                    target_id=user.id,
                    tenant_id=user.tenant_id,
                    details={"email": user.email},
                )
            view = self.user_view(s, user)
        if changed:
            self._changed()
        return view

    def set_password(self, actor: Actor, user_id: int, password: str | None = None) -> str | None:
        """Set (or generate and return) the password of the person behind membership ``user_id``, ending every
        session of that person (in every tenant).

        A reset usually means the old password may be known to someone else: a session opened with it
        must not outlive it. The sessions go in the same transaction as the new hash, and the user row
        is locked, so a login that checked the old password cannot open a session afterwards (see
        ``SessionService.login``).
        """
        generated = None
        if password is None:
            password = generated = self.passwords.generate()
        clean_password(password, MIN_LENGTH)
        password_hash = self.passwords.hash(password)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            user = self._user_in_scope(s, actor, user_id)
            if actor.kind not in ("operator", "user"):
                raise KbaiError(errors.MANAGE_NEEDS_SESSION, action="set a password")
            if actor.kind == "user" and actor.user_id != user.id:
                may_manage(actor, "users.manage", "set another user's password", user.tenant_id)
                held = self._held(s, actor, "users.manage", "set another user's password", user.tenant_id)
                self._not_above(s, held, user, "set the password of")
            person = s.get(Person, user.person_id, with_for_update=True)
            assert person is not None
            person.password_hash = password_hash
            theirs = select(User.id).where(User.person_id == person.id).scalar_subquery()
            ended = s.execute(delete(LoginSession).where(LoginSession.user_id.in_(theirs))).rowcount  # type: ignore[attr-defined]
            audit.record(
                s,
                actor,
                "user.password",
                at=now,
                target_type="user",
                target_id=user.id,
                tenant_id=user.tenant_id,
                details={"email": person.email, "sessions_ended": ended},
            )
        return generated

    def authenticate(self, email: str, password: str, tenant: str | int | None = None) -> User:
        """The active membership of the person with this email and password, or INVALID_CREDENTIALS (same time
        either way): in ``tenant`` (id, name or external id) when given, else the one used last.

        A deactivated membership, a tenant the person is not in, and a tenant that does not exist all answer
        exactly as a wrong password does (after the same full verification): anything else would tell a
        guesser that the password was right, or which tenants exist."""
        person = self.authenticate_person(email, password)
        if tenant is not None:
            user = self.find_membership(person.id, tenant)
        else:
            with self.db.read() as s:
                user = self._membership(s, person, active_only=True)
        if user is None or not user.active:
            raise KbaiError(errors.INVALID_CREDENTIALS)
        return user

    def authenticate_person(self, email: str, password: str) -> Person:
        """The person with this email and password, or INVALID_CREDENTIALS (same time either way)."""
        if not isinstance(email, str) or not isinstance(password, str) or len(password) > 1024 or "\x00" in email:
            # (PostgreSQL refuses NUL in a query parameter: that would be a 422 there and a 401 on SQLite.)
            raise KbaiError(errors.INVALID_CREDENTIALS)
        with self.db.read() as s:
            person = s.scalar(select(Person).where(Person.email == email.strip().lower()))
        ok = self.passwords.verify(person.password_hash if person else None, password)
        if not ok or person is None or person.password_hash is None:
            raise KbaiError(errors.INVALID_CREDENTIALS)
        if self.passwords.needs_rehash(person.password_hash):
            rehashed = self.passwords.hash(password)
            with self.db.write() as s:
                fresh = s.get(Person, person.id, with_for_update=True)
                # Only over the hash just verified: a password set meanwhile must not be put back.
                if fresh is not None and fresh.password_hash == person.password_hash:
                    fresh.password_hash = person.password_hash = rehashed
        return person

    # ---- roles ---------------------------------------------------------------------------
    def list_roles(self, actor: Actor, tenant_id: int) -> list[RoleView]:
        require(actor, "roles.read", "list roles", tenant_id)
        with self.db.read() as s:
            roles = s.scalars(select(Role).where(Role.tenant_id == tenant_id).order_by(Role.id)).all()
            return [self.role_view(s, r) for r in roles]

    def get_role(self, actor: Actor, role_id: int) -> RoleView:
        with self.db.read() as s:
            role = self._role_in_scope(s, actor, role_id)
            require(actor, "roles.read", "view roles", role.tenant_id)
            return self.role_view(s, role)

    def create_role(self, actor: Actor, tenant_id: int, name: str, permissions: Iterable[str]) -> RoleView:
        may_manage(actor, "roles.manage", "create roles", tenant_id)
        name = clean_name(name, "role name")
        perms = self._clean_permissions(permissions)
        now = utc_seconds(self.clock.now())
        try:
            with self.db.write() as s:
                self._lock_tenant(s, tenant_id)
                held = self._held(s, actor, "roles.manage", "create roles", tenant_id)
                if held is not None and set(perms) - held:
                    raise KbaiError(errors.ROLE_ADD_NOT_HELD, **self._listed(set(perms) - held))
                if s.scalar(select(Role.id).where(Role.tenant_id == tenant_id, Role.name == name)) is not None:
                    raise KbaiError(errors.ALREADY_EXISTS, what=f"A role named '{name}'")
                role = Role(tenant_id=tenant_id, name=name, builtin=None, created_at=now)
                s.add(role)
                s.flush()
                s.add_all([RolePermission(role_id=role.id, permission=p) for p in perms])
                audit.record(
                    s,
                    actor,
                    "role.create",
                    at=now,
                    target_type="role",
                    target_id=role.id,
                    tenant_id=tenant_id,
                    details={"name": name, "permissions": perms},
                )
                s.flush()
                return self.role_view(s, role)
        except IntegrityError:
            raise KbaiError(errors.ALREADY_EXISTS, what=f"A role named '{name}'") from None

    def update_role(
        self, actor: Actor, role_id: int, permissions: Iterable[str] | None = None, name: str | None = None
    ) -> RoleView:
        """Replace a role's permissions (and optionally rename it). Takes effect on every token at once."""
        perms = None if permissions is None else self._clean_permissions(permissions)
        new_name = None if name is None else clean_name(name, "role name")
        now = utc_seconds(self.clock.now())
        try:
            with self.db.write() as s:
                role = self._role_in_scope(s, actor, role_id)
                may_manage(actor, "roles.manage", "change roles", role.tenant_id)
                self._lock_tenant(s, role.tenant_id)
                held = self._held(s, actor, "roles.manage", "change roles", role.tenant_id)
                if role.builtin == ADMIN and (
                    perms is not None and set(perms) != self.catalog.keys or new_name not in (None, role.name)
                ):
                    raise KbaiError(errors.ADMIN_ROLE_FIXED, role=role.name)
                if role.builtin is not None and new_name not in (None, role.name):
                    raise KbaiError(errors.ADMIN_ROLE_FIXED, role=role.name)
                before = self.role_view(s, role).permissions
                if new_name is not None and new_name != role.name:
                    if s.scalar(select(Role.id).where(Role.tenant_id == role.tenant_id, Role.name == new_name)):
                        raise KbaiError(errors.ALREADY_EXISTS, what=f"A role named '{new_name}'")
                    role.name = new_name
                if perms is not None and role.builtin != ADMIN:
                    added, removed = set(perms) - set(before), set(before) - set(perms)
                    if held is not None and added - held:
                        raise KbaiError(errors.ROLE_ADD_NOT_HELD, **self._listed(added - held))
                    if held is not None and removed - held:
                        raise KbaiError(errors.ROLE_REMOVE_NOT_HELD, role=role.name, **self._listed(removed - held))
                    holders = list(s.scalars(select(UserRole.user_id).where(UserRole.role_id == role.id)))
                    holders_before = role_permissions(s, holders, self.catalog)
                    for rp in s.scalars(select(RolePermission).where(RolePermission.role_id == role.id)):
                        s.delete(rp)
                    s.flush()
                    s.add_all([RolePermission(role_id=role.id, permission=p) for p in perms])
                    s.flush()
                    if held is not None and removed:
                        self._no_loss_above(s, held, role, holders_before)
                s.flush()
                view = self.role_view(s, role)
                audit.record(
                    s,
                    actor,
                    "role.update",
                    at=now,
                    target_type="role",
                    target_id=role.id,
                    tenant_id=role.tenant_id,
                    details={
                        "name": role.name,
                        "added": sorted(set(view.permissions) - set(before)),
                        "removed": sorted(set(before) - set(view.permissions)),
                    },
                )
        except IntegrityError:
            raise KbaiError(errors.ALREADY_EXISTS, what=f"A role named '{new_name}'") from None
        self._changed()
        self._may_have_granted(role.tenant_id)
        return view

    def delete_role(self, actor: Actor, role_id: int) -> None:
        """Delete a role of one's own making: its holders lose what it granted, on every token at once. The
        built-in Admin and Member roles stay; a tenant never loses its last active admin this way either."""
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            role = self._role_in_scope(s, actor, role_id)
            may_manage(actor, "roles.manage", "delete roles", role.tenant_id)
            self._lock_tenant(s, role.tenant_id)
            held = self._held(s, actor, "roles.manage", "delete roles", role.tenant_id)
            if role.builtin is not None:
                raise KbaiError(errors.BUILTIN_ROLE_KEPT, role=role.name)
            holders = list(s.scalars(select(UserRole.user_id).where(UserRole.role_id == role.id)))
            before = role_permissions(s, holders, self.catalog)
            if held is not None and set(self.role_view(s, role).permissions) - held:
                raise KbaiError(
                    errors.ROLE_REMOVE_NOT_HELD,
                    role=role.name,
                    **self._listed(set(self.role_view(s, role).permissions) - held),
                )
            s.execute(delete(UserRole).where(UserRole.role_id == role.id))
            s.execute(delete(RolePermission).where(RolePermission.role_id == role.id))
            s.flush()
            if held is not None:
                self._no_loss_above(s, held, role, before)
            audit.record(
                s,
                actor,
                "role.delete",
                at=now,
                target_type="role",
                target_id=role.id,
                tenant_id=role.tenant_id,
                details={"name": role.name, "holders": len(holders)},
            )
            s.delete(role)
        self._changed()

    # ---- limits --------------------------------------------------------------------------
    def set_limit(
        self,
        actor: Actor,
        max_active_tokens: int | None,
        *,
        user_email: str | None = None,
        tenant_name: str | None = None,
        membership_tenant: str | None = None,
    ) -> None:
        """Override the active-token limit of one membership or a whole tenant (None: back to the default).

        The limit counts per membership: ``membership_tenant`` (a tenant name) says which of a person's
        memberships, and is needed only when they have several."""
        if actor.kind != "operator" and not (actor.kind == "service" and trusted_in(actor, None)):
            raise KbaiError(errors.FORBIDDEN, permission="operator access", action="change token limits")
        if (user_email is None) == (tenant_name is None):
            raise KbaiError(errors.VALIDATION, detail="Give exactly one of a user email or a tenant name.")
        if max_active_tokens is not None and not (1 <= max_active_tokens <= MAX_LIMIT):
            raise KbaiError(errors.VALIDATION, detail=f"max_active_tokens must be between 1 and {MAX_LIMIT}.")
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            target: User | Tenant | None
            if user_email is not None:
                target = self._membership_by_email(s, user_email, membership_tenant)
                tenant_id, target_type, label = target.tenant_id, "user", target.email
            else:
                target = s.scalar(select(Tenant).where(Tenant.name == (tenant_name or "").strip()))
                if target is None:
                    raise KbaiError(errors.NOT_FOUND, what=f"Tenant '{tenant_name}'")
                tenant_id, target_type, label = target.id, "tenant", target.name
            before = target.max_active_tokens
            target.max_active_tokens = max_active_tokens
            audit.record(
                s,
                actor,
                "limit.set",
                at=now,
                target_type=target_type,
                target_id=target.id,
                tenant_id=tenant_id,
                details={"target": label, "from": before, "to": max_active_tokens},
            )

    def set_service_limit(self, actor: Actor, tenant_name: str, max_service_tokens: int | None) -> None:
        """Override how many active service tokens a tenant may hold (None: back to the default). Operators."""
        if actor.kind != "operator" and not (actor.kind == "service" and trusted_in(actor, None)):
            raise KbaiError(errors.FORBIDDEN, permission="operator access", action="change token limits")
        if max_service_tokens is not None and not (1 <= max_service_tokens <= MAX_LIMIT):
            raise KbaiError(errors.VALIDATION, detail=f"max_service_tokens must be between 1 and {MAX_LIMIT}.")
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            tenant = s.scalar(select(Tenant).where(Tenant.name == tenant_name.strip()).with_for_update())
            if tenant is None:
                raise KbaiError(errors.NOT_FOUND, what=f"Tenant '{tenant_name}'")
            before = tenant.max_service_tokens
            tenant.max_service_tokens = max_service_tokens
            audit.record(
                s,
                actor,
                "limit.set_service_tokens",
                at=now,
                target_type="tenant",
                target_id=tenant.id,
                tenant_id=tenant.id,
                details={"target": tenant.name, "from": before, "to": max_service_tokens},
            )

    def manageable(self, actor: Actor, tenant_id: int) -> tuple[frozenset[int], frozenset[int]]:
        """(ids of the roles ``actor`` may hand out, ids of the users whose access ``actor`` may change) in
        ``tenant_id``: what the Users page offers. Empty without users.manage; everything for an operator."""
        with self.db.read() as s:
            roles = list(s.scalars(select(Role).where(Role.tenant_id == tenant_id)))
            user_ids = list(s.scalars(select(User.id).where(User.tenant_id == tenant_id)))
            if actor.kind == "operator":
                return frozenset(r.id for r in roles), frozenset(user_ids)
            if actor.kind != "user" or "users.manage" not in actor.permissions or actor.tenant_id != tenant_id:
                return frozenset(), frozenset()
            held = actor.permissions
            theirs = role_permissions(s, user_ids, self.catalog)
            return (
                frozenset(r.id for r in roles if set(self.role_view(s, r).permissions) <= held),
                frozenset(uid for uid, perms in theirs.items() if perms <= held),
            )

    # ---- people arriving through the host product's sign-in (called by kbai.identity) ------------
    def admit(self, actor: Actor, arrival: Arrival) -> Admitted:
        """Who ``arrival`` is here, in one transaction: their tenant (created if allowed), their user
        (found by identity, linked by external id or verified email, or created), their roles (set to
        exactly the named ones when given). Operator trust: any role may be assigned, Admin included,
        but a tenant never loses its last active admin. Any refusal changes nothing."""
        try:
            return self._admit(actor, arrival)
        except IntegrityError:
            # Two first sign-ins of the same person (or organisation) at once: the other one won; now there
            # is an identity (or tenant) to find.
            try:
                return self._admit(actor, arrival)
            except IntegrityError:
                raise KbaiError(errors.ALREADY_EXISTS, what=f"An account for {arrival.email}") from None

    def _admit(self, actor: Actor, arrival: Arrival) -> Admitted:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            tenant = s.scalar(select(Tenant).where(Tenant.external_id == arrival.tenant_external_id))
            created_tenant = tenant is None
            if tenant is None:
                if not arrival.create_tenant:
                    raise KbaiError(errors.OIDC_TENANT_UNKNOWN, org=arrival.tenant_external_id)
                tenant, _ = self._new_tenant(
                    s, actor, self._free_tenant_name(s, arrival), arrival.tenant_external_id, now
                )
            identity = s.scalar(
                select(Identity).where(Identity.issuer == arrival.issuer, Identity.subject == arrival.subject)
            )
            person = s.get(Person, identity.person_id) if identity is not None else None
            user = (
                None
                if person is None
                else s.scalar(select(User).where(User.person_id == person.id, User.tenant_id == tenant.id))
            )
            linked = None
            if user is None:
                found, linked = self._link(s, tenant, arrival)
                if found is not None and person is not None and found.person_id != person.id:
                    # that membership is another person's: this identity never takes it over
                    raise KbaiError(errors.OIDC_ALREADY_LINKED, email=found.email)
                user = found
                if person is None and user is not None:
                    person = s.get(Person, user.person_id)
                    assert person is not None
                    identity = self._add_identity(s, actor, person, user, arrival, now, linked)
            if person is None and user is None:
                person = self._person_of_email(s, arrival)
                if person is not None:
                    linked = "email"
                    identity = self._add_identity(s, actor, person, None, arrival, now, linked)
            created_user = user is None
            wanted, unknown = self._claimed_roles(s, tenant.id, arrival.roles)
            if user is None:
                user, person = self._provision(s, actor, tenant, person, arrival, wanted, now)
                if identity is None:
                    identity = self._add_identity(s, actor, person, None, arrival, now, None)
                roles_changed = False
            else:
                if not user.active:
                    raise KbaiError(errors.USER_INACTIVE)
                roles_changed = wanted is not None and self._replace_roles(s, actor, user, wanted, now)
            self._admin_remains(s, actor, tenant.id, user, now)
            assert identity is not None and person is not None
            identity.last_login_at = now
            # The provider vouches for the person: a membership waiting for its invitation is entered now.
            s.execute(
                update(Invitation)
                .where(Invitation.user_id == user.id, Invitation.accepted_at.is_(None))
                .values(accepted_at=now)
            )
            person.last_tenant_id = tenant.id
            admitted = Admitted(
                user.id, tenant.id, user.email, created_user, created_tenant, linked, roles_changed, unknown
            )
        if roles_changed:
            self._changed()
        return admitted

    @staticmethod
    def _free_tenant_name(s: Session, arrival: Arrival) -> str:
        base = clean_name((arrival.tenant_name or "").strip() or arrival.tenant_external_id, "organisation name")
        for name in (base, f"{base} ({arrival.tenant_external_id})"[:100]):
            if s.scalar(select(Tenant.id).where(Tenant.name == name)) is None:
                return name
        raise KbaiError(errors.ALREADY_EXISTS, what=f"Tenant '{base}'")

    @staticmethod
    def _link(s: Session, tenant: Tenant, arrival: Arrival) -> tuple[User | None, str | None]:
        """An existing membership of this tenant a first sign-in may be linked to: by the product's external id,
        or by an email the provider has verified. An unverified email never links."""
        if arrival.user_external_id is not None:
            user = s.scalar(
                select(User).where(User.tenant_id == tenant.id, User.external_id == arrival.user_external_id)
            )
            if user is not None:
                return user, "external_id"
        if arrival.email is None:
            return None, None
        user = s.scalar(
            select(User)
            .join(Person, Person.id == User.person_id)
            .where(User.tenant_id == tenant.id, Person.email == arrival.email)
        )
        if user is None:
            return None, None
        if not arrival.email_verified:
            raise KbaiError(errors.OIDC_EMAIL_UNVERIFIED, email=arrival.email)
        return user, "email"

    @staticmethod
    def _person_of_email(s: Session, arrival: Arrival) -> Person | None:
        """The person (a member of other tenants only) with the arrival's email, when the provider verified it;
        an unverified email of an existing person is refused (an email is one person's)."""
        if arrival.email is None:
            return None
        person = s.scalar(select(Person).where(Person.email == arrival.email))
        if person is not None and not arrival.email_verified:
            raise KbaiError(errors.OIDC_EMAIL_UNVERIFIED, email=arrival.email)
        return person

    @staticmethod
    def _add_identity(
        s: Session, actor: Actor, person: Person, user: User | None, arrival: Arrival, now: datetime, linked: str | None
    ) -> Identity:
        other = s.scalar(select(Identity).where(Identity.person_id == person.id, Identity.issuer == arrival.issuer))
        if other is not None and other.subject == arrival.subject:
            return other  # the same sign-in, made at the same moment by another request, got here first
        if other is not None:  # one identity per issuer: a second account at the provider never takes this one over
            raise KbaiError(errors.OIDC_ALREADY_LINKED, email=person.email)
        identity = Identity(issuer=arrival.issuer, subject=arrival.subject, person_id=person.id, created_at=now)
        s.add(identity)
        s.flush()
        if linked is not None:
            audit.record(
                s,
                actor,
                "identity.link",
                at=now,
                target_type="user",
                target_id=user.id if user is not None else None,
                tenant_id=user.tenant_id if user is not None else None,
                details={
                    "email": person.email,
                    "issuer": arrival.issuer,
                    "subject": arrival.subject,
                    "by": linked,
                    "person_id": person.id,
                },
            )
        return identity

    @staticmethod
    def _claimed_roles(s: Session, tenant_id: int, names: list[str] | None) -> tuple[list[Role] | None, list[str]]:
        """The tenant's roles named in a claim (case-insensitive) and the names that match none."""
        if names is None:
            return None, []
        by_name = {r.name.casefold(): r for r in s.scalars(select(Role).where(Role.tenant_id == tenant_id))}
        found: list[Role] = []
        unknown: list[str] = []
        for name in names:
            role = by_name.get(name.strip().casefold())
            if role is None:
                unknown.append(name)
            elif role not in found:
                found.append(role)
        return found, unknown

    def _provision(
        self,
        s: Session,
        actor: Actor,
        tenant: Tenant,
        person: Person | None,
        arrival: Arrival,
        roles: list[Role] | None,
        now: datetime,
    ) -> tuple[User, Person]:
        """Just in time: a membership of ``tenant`` for the person (created, without a password, when new)."""
        if person is None:
            if arrival.email is None:
                raise KbaiError(errors.OIDC_CLAIM_MISSING, what="your email address", claim="email")
            # No password: this person signs in through the provider.
            person = Person(email=arrival.email, password_hash=None, created_at=now)
            s.add(person)
            s.flush()
        if roles is None:
            roles = self._builtin_roles(s, tenant.id, MEMBER)
        ext = arrival.user_external_id
        if ext is not None and s.scalar(select(User.id).where(User.tenant_id == tenant.id, User.external_id == ext)):
            ext = None  # (cannot happen: such a membership would have been linked)
        user = User(tenant_id=tenant.id, person_id=person.id, active=True, created_at=now, external_id=ext)
        s.add(user)
        s.flush()
        s.add_all([UserRole(user_id=user.id, role_id=r.id) for r in roles])
        s.flush()
        audit.record(
            s,
            actor,
            "user.create",
            at=now,
            target_type="user",
            target_id=user.id,
            tenant_id=tenant.id,
            details={"email": person.email, "roles": sorted(r.name for r in roles), "via": "oidc", "external_id": ext},
        )
        return user, person

    @staticmethod
    def _replace_roles(s: Session, actor: Actor, user: User, wanted: list[Role], now: datetime) -> bool:
        before = set(s.scalars(select(UserRole.role_id).where(UserRole.user_id == user.id)))
        if before == {r.id for r in wanted}:
            return False
        s.execute(delete(UserRole).where(UserRole.user_id == user.id))
        s.add_all([UserRole(user_id=user.id, role_id=r.id) for r in wanted])
        s.flush()
        audit.record(
            s,
            actor,
            "user.roles",
            at=now,
            target_type="user",
            target_id=user.id,
            tenant_id=user.tenant_id,
            details={"email": user.email, "roles": sorted(r.name for r in wanted), "via": "oidc"},
        )
        return True

    def _admin_remains(self, s: Session, actor: Actor, tenant_id: int, user: User, now: datetime) -> None:
        """A tenant always keeps an active admin: when the claims would leave none, this person keeps (or, as the
        first person of a new tenant, gets) the Admin role, and the audit entry says so."""
        try:
            self._keep_an_admin(s, tenant_id)
        except KbaiError:
            (admin,) = self._builtin_roles(s, tenant_id, ADMIN)
            s.add(UserRole(user_id=user.id, role_id=admin.id))
            s.flush()
            names = sorted(
                s.scalars(
                    select(Role.name).join(UserRole, UserRole.role_id == Role.id).where(UserRole.user_id == user.id)
                )
            )
            audit.record(
                s,
                actor,
                "user.roles",
                at=now,
                target_type="user",
                target_id=user.id,
                tenant_id=tenant_id,
                details={"email": user.email, "roles": names, "via": "oidc", "kept_admin": True},
            )

    # ---- helpers -------------------------------------------------------------------------
    def _held(self, s: Session, actor: Actor, permission: str, action: str, tenant_id: int) -> frozenset[str] | None:
        """What ``actor`` holds now, read inside this write (None: an operator, who holds everything). The
        rules below compare with this, not with what the request started with."""
        if actor.kind == "operator" or trusted_in(actor, tenant_id):
            return None
        me = s.get(User, actor.user_id) if actor.user_id is not None else None
        held = permissions_of(s, me, self.catalog) if me is not None and me.tenant_id == tenant_id else frozenset()
        if permission not in held:
            raise KbaiError(errors.FORBIDDEN, permission=permission, action=action)
        return held

    def _listed(self, permissions: Iterable[str]) -> dict[str, str]:
        """Template parameters naming ``permissions`` in catalog order: "a", "a and b", "a, b and 3 more"."""
        wanted = set(permissions)
        keys = [p.key for p in self.catalog.permissions if p.key in wanted]
        if len(keys) <= 3:
            text = keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]
        else:
            text = f"{keys[0]}, {keys[1]} and {len(keys) - 2} more"
        return {"permissions": text, "them": "it" if len(keys) == 1 else "them"}

    def _assignable(self, s: Session, held: frozenset[str] | None, roles: Iterable[Role]) -> None:
        """Refuse handing out a role that grants a permission the actor doesn't hold."""
        if held is None:
            return
        for role in roles:
            missing = set(self.role_view(s, role).permissions) - held
            if missing:
                raise KbaiError(errors.ROLE_NOT_ASSIGNABLE, role=role.name, **self._listed(missing))

    def _not_above(self, s: Session, held: frozenset[str] | None, user: User, action: str) -> None:
        """Refuse acting on someone whose roles grant a permission the actor doesn't hold (an Admin, say)."""
        if held is None:
            return
        missing = role_permissions(s, [user.id], self.catalog)[user.id] - held
        if missing:
            raise KbaiError(errors.USER_OUTRANKS, action=action, email=user.email, **self._listed(missing))

    def _no_loss_above(self, s: Session, held: frozenset[str], role: Role, before: dict[int, frozenset[str]]) -> None:
        """After a role lost permissions: refuse if a holder who holds more than the actor lost any."""
        after = role_permissions(s, before, self.catalog)
        lost: set[str] = set()
        for uid, perms in before.items():
            if not perms <= held:
                lost |= perms - after[uid]
        if lost:
            raise KbaiError(errors.ROLE_HOLDER_OUTRANKS, role=role.name, **self._listed(lost))

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def _may_have_granted(self, tenant_id: int) -> None:
        for listener in self.grant_listeners:
            listener(tenant_id)

    def _clean_permissions(self, permissions: Iterable[str]) -> list[str]:
        if isinstance(permissions, str) or not isinstance(permissions, Iterable):
            raise KbaiError(errors.VALIDATION, detail="permissions must be a list of permission keys.")
        wanted = list(permissions)
        for p in wanted:
            if not isinstance(p, str) or p not in self.catalog:
                raise KbaiError(errors.UNKNOWN_PERMISSION, permission=str(p)[:100])
        return [p.key for p in self.catalog.permissions if p.key in set(wanted)]

    @staticmethod
    def _membership_by_email(s: Session, email: str, tenant_name: str | None) -> User:
        """The operator's way to name a membership: an email, and a tenant name when the person has several."""
        person = s.scalar(select(Person).where(Person.email == email.strip().lower()))
        rows = (
            []
            if person is None
            else list(
                s.execute(
                    select(User, Tenant.name)
                    .join(Tenant, Tenant.id == User.tenant_id)
                    .where(User.person_id == person.id)
                    .order_by(Tenant.name)
                )
            )
        )
        if tenant_name is not None:
            rows = [r for r in rows if r[1] == tenant_name.strip()]
            if not rows:
                raise KbaiError(errors.NOT_FOUND, what=f"User '{email}' in tenant '{tenant_name}'")
        if not rows:
            raise KbaiError(errors.NOT_FOUND, what=f"User '{email}'")
        if len(rows) > 1:
            raise KbaiError(errors.MEMBERSHIP_AMBIGUOUS, email=email, tenants=", ".join(r[1] for r in rows))
        return rows[0][0]

    def membership_by_email(self, email: str, tenant_name: str | None = None) -> User:
        """As the CLI names a membership: NOT_FOUND, or MEMBERSHIP_AMBIGUOUS when a tenant name is needed."""
        with self.db.read() as s:
            return self._membership_by_email(s, email, tenant_name)

    @staticmethod
    def _lock_tenant(s: Session, tenant_id: int) -> None:
        s.scalar(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())

    @staticmethod
    def _builtin_roles(s: Session, tenant_id: int, kind: str) -> list[Role]:
        return list(s.scalars(select(Role).where(Role.tenant_id == tenant_id, Role.builtin == kind)))

    def _roles(self, s: Session, tenant_id: int, roles: Sequence[str | int]) -> list[Role]:
        found: list[Role] = []
        for ref in roles:
            if (
                isinstance(ref, bool)
                or not isinstance(ref, (str, int))
                or (isinstance(ref, int) and not 1 <= ref <= 2_147_483_647)
            ):
                raise KbaiError(errors.VALIDATION, detail=f"Unknown role '{ref}' in this tenant.")
            query = select(Role).where(Role.tenant_id == tenant_id)
            query = query.where(Role.id == ref) if isinstance(ref, int) else query.where(Role.name == ref.strip())
            role = s.scalar(query)
            if role is None:
                raise KbaiError(errors.VALIDATION, detail=f"Unknown role '{ref}' in this tenant.")
            if role not in found:
                found.append(role)
        return found

    @staticmethod
    def _active_admin(s: Session, user: User) -> bool:
        admin_roles = s.scalar(
            select(func.count())
            .select_from(UserRole)
            .join(Role, Role.id == UserRole.role_id)
            .where(UserRole.user_id == user.id, Role.builtin == ADMIN)
        )
        return bool(user.active and admin_roles)

    def _keep_an_admin(self, s: Session, tenant_id: int) -> None:
        count = s.scalar(
            select(func.count(func.distinct(User.id)))
            .select_from(User)
            .join(UserRole, UserRole.user_id == User.id)
            .join(Role, Role.id == UserRole.role_id)
            .where(User.tenant_id == tenant_id, User.active.is_(True), Role.builtin == ADMIN)
        )
        if not count:
            raise KbaiError(errors.LAST_ADMIN)

    @staticmethod
    def _user_in_scope(s: Session, actor: Actor, user_id: int) -> User:
        user = s.get(User, user_id)
        everywhere = actor.kind == "operator" or (actor.kind == "service" and trusted_in(actor, None))
        if user is None or (not everywhere and user.tenant_id != actor.tenant_id):
            raise KbaiError(errors.NOT_FOUND, what="User")
        return user

    @staticmethod
    def _role_in_scope(s: Session, actor: Actor, role_id: int) -> Role:
        role = s.get(Role, role_id)
        if role is None or (actor.kind != "operator" and role.tenant_id != actor.tenant_id):
            raise KbaiError(errors.NOT_FOUND, what="Role")
        return role

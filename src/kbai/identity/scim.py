"""SCIM 2.0 provisioning (RFC 7643/7644): Users and Groups of one tenant, turned into access operations.

A User is a membership of the credential's tenant (its ``id`` is the membership id); a Group is a tenant
role (``displayName`` = role name, ``members`` = the memberships holding it). Every change goes through
:class:`~kbai.access.service.AccessService`, exactly as an admin's change on the Users and Roles pages,
with the provisioning credential as the audited actor: deactivation ends sessions and stops tokens on
every instance (the access listeners announce it), a group removal cuts those permissions from tokens,
the last active admin stays, built-in roles stay.

Resources, the filter grammar and PATCH semantics (value paths, ``"op": "Replace"``, ``"False"``) are
``scim2-models``'; this module only maps them onto kbai. What kbai has no column for (``userName`` when it
is not the email, ``name``, further ``emails``, the enterprise extension, a Group's ``externalId``) is kept
beside the membership in ``scim_users`` / ``scim_groups``, as sent.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import email_validator
from pydantic import ValidationError
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    InvalidFilterException,
    InvalidSyntaxException,
    InvalidValueException,
    Meta,
    MutabilityException,
    NotFoundException,
    Patch,
    PatchOp,
    PreconditionFailedException,
    ResourceType,
    SCIMException,
    ScimFilter,
    ServiceProviderConfig,
    Sort,
    UniquenessException,
    User,
)
from sqlalchemy import select

from kbai import errors
from kbai.access.service import AccessService
from kbai.clock import Clock, utc_seconds
from kbai.errors import KbaiError
from kbai.store import Database
from kbai.store.audit import Actor
from kbai.store.models import Role, ScimGroup, ScimUser, UserRole
from kbai.store.models import User as Membership

# Which addresses a member may have is kbai's rule (kbai.validate.clean_email), the same on every page and
# over SCIM. email-validator (behind scim2-models' Email.value) also refuses RFC 6761 special-use names such
# as .test and .local, which kbai accepts; without this, such members could be created in kbai and never read
# over SCIM. (It is only that list: syntax is still checked.)
email_validator.SPECIAL_USE_DOMAIN_NAMES = []

ScimUserModel = User[EnterpriseUser]
NO_EMAIL_DOMAIN = "no-email.invalid"
MAX_RESULTS = 200  # filter.maxResults: a larger count is cut to it (RFC 7644 §3.4.2.4 allows that)
_CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# Kept in a User's stored attributes when the provider removed `active` (PATCH remove): the membership stays as
# it is (neither deactivated nor reactivated) and the resource shows no `active` until the provider sets it.
_ACTIVE_UNSET = "kbai:activeUnset"
# Attributes kbai owns on a User (never taken from the stored SCIM attributes).
_OWNED = {"schemas", "id", "meta", "userName", "externalId", "active", "groups", "password", _ACTIVE_UNSET}


def kbai_error(exc: KbaiError) -> SCIMException:
    """The SCIM error for an access rule's refusal (its message says what to do next)."""
    status = exc.status
    if exc.spec in (errors.ADMIN_ROLE_FIXED, errors.BUILTIN_ROLE_KEPT):
        return MutabilityException(detail=exc.message)
    if status == 404:
        return NotFoundException(detail=exc.message)
    if exc.code == "already_exists":
        return UniquenessException(detail=exc.message)
    if status in (400, 422):
        return InvalidValueException(detail=exc.message)
    error = SCIMException(detail=exc.message)
    error.status = status if status in (401, 403, 409, 412, 413, 429, 503) else 400
    return error


def validation_error(exc: ValidationError) -> SCIMException:
    """The SCIM error for a body the models refuse: the scimType they name (an unknown attribute is
    invalidSyntax), else invalidValue."""
    parts = []
    scim_type, status = None, 400
    for e in exc.errors()[:3]:
        where = ".".join(str(p) for p in e.get("loc", ())) or "body"
        kind = str(e.get("type", ""))
        ctx = e.get("ctx") or {}
        if kind.startswith("scim_") and scim_type is None:
            scim_type = str(ctx.get("scim_type") or kind[len("scim_") :])
            status = int(ctx.get("status") or 400)
        msg = "is not a known attribute" if kind == "extra_forbidden" else str(e.get("msg", "is invalid"))
        parts.append(f"{where} {msg}")
    detail = "; ".join(parts)[:500]
    if scim_type is None:
        unknown = any(e.get("type") == "extra_forbidden" for e in exc.errors())
        return InvalidSyntaxException(detail=detail) if unknown else InvalidValueException(detail=detail)
    error = SCIMException(detail=detail)
    error.scim_type = scim_type
    error.status = status if 400 <= status < 500 else 400
    return error


def etag(payload: dict[str, Any]) -> str:
    """A weak ETag of a resource's representation (meta left out): it changes whenever the resource does."""
    body = {k: v for k, v in payload.items() if k != "meta"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return f'W/"{digest}"'


@dataclass(frozen=True)
class Page:
    total: int
    start: int
    resources: list[dict[str, Any]]


class Scim:
    """The SCIM resources of one tenant at a time (the credential's, carried by ``actor``)."""

    def __init__(self, db: Database, clock: Clock, access: AccessService) -> None:
        self.db = db
        self.clock = clock
        self.access = access

    # ---- discovery -----------------------------------------------------------------------
    @staticmethod
    def service_provider_config(base: str) -> dict[str, Any]:
        config = ServiceProviderConfig(
            documentation_uri=None,
            patch=Patch(supported=True),
            bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
            filter=Filter(supported=True, max_results=MAX_RESULTS),
            change_password=ChangePassword(supported=False),
            sort=Sort(supported=False),
            etag=ETag(supported=True),
            authentication_schemes=[
                AuthenticationScheme(
                    type=AuthenticationScheme.Type.oauthbearertoken,
                    name="OAuth Bearer Token",
                    primary=True,
                    description="A provisioning credential (kbai_scim_...) from System Settings > Provisioning (SCIM) "
                    "or `kbai scim-token create --tenant NAME`, sent as Authorization: Bearer.",
                )
            ],
            meta=Meta(resource_type="ServiceProviderConfig", location=f"{base}/ServiceProviderConfig"),
        )
        return config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)

    @staticmethod
    def resource_types(base: str) -> list[dict[str, Any]]:
        out = []
        for model in (ScimUserModel, Group):
            rt = ResourceType.from_resource(model)
            rt.meta = Meta(resource_type="ResourceType", location=f"{base}/ResourceTypes/{rt.id}")
            out.append(rt.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
        return out

    @staticmethod
    def schemas(base: str) -> list[dict[str, Any]]:
        out = []
        for model in (User, EnterpriseUser, Group):
            schema = model.to_schema()
            schema.meta = Meta(resource_type="Schema", location=f"{base}/Schemas/{schema.id}")
            out.append(schema.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
        return out

    # ---- users ---------------------------------------------------------------------------
    def _user_resource(
        self, base: str, user: Membership, row: ScimUser | None, roles: list[tuple[int, str]]
    ) -> ScimUserModel:
        attrs: dict[str, Any] = dict(row.attributes) if row is not None else {}
        payload: dict[str, Any] = {k: v for k, v in attrs.items() if k not in _OWNED}
        payload["schemas"] = [_CORE_USER] + ([_ENTERPRISE] if _ENTERPRISE in payload else [])
        payload["id"] = str(user.id)
        payload["userName"] = row.user_name if row is not None else user.email
        external = row.external_id if row is not None else user.external_id
        if external is not None:
            payload["externalId"] = external
        if not attrs.get(_ACTIVE_UNSET):
            payload["active"] = bool(user.active)
        if not payload.get("emails") and not user.email.endswith("@" + NO_EMAIL_DOMAIN) and row is None:
            payload["emails"] = [{"value": user.email, "primary": True}]
        if roles:
            payload["groups"] = [
                {"value": str(rid), "display": name, "$ref": f"{base}/Groups/{rid}"} for rid, name in roles
            ]
        return ScimUserModel.model_validate(payload)

    def _user_dump(self, base: str, model: ScimUserModel, user: Membership, row: ScimUser | None) -> dict[str, Any]:
        body = model.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        tag = etag(body)
        modified = row.updated_at if row is not None and row.updated_at > user.created_at else user.created_at
        if user.deactivated_at is not None and user.deactivated_at > modified:
            modified = user.deactivated_at
        body["meta"] = {
            "resourceType": "User",
            "created": user.created_at.isoformat(),
            "lastModified": modified.isoformat(),
            "location": f"{base}/Users/{user.id}",
            "version": tag,
        }
        return body

    def _load_users(
        self, tenant_id: int, user_id: int | None = None
    ) -> list[tuple[Membership, ScimUser | None, list[tuple[int, str]]]]:
        with self.db.read() as s:
            query = select(Membership).where(Membership.tenant_id == tenant_id).order_by(Membership.id)
            if user_id is not None:
                query = query.where(Membership.id == user_id)
            users = list(s.scalars(query))
            ids = [u.id for u in users]
            rows = {r.user_id: r for r in s.scalars(select(ScimUser).where(ScimUser.user_id.in_(ids)))} if ids else {}
            roles: dict[int, list[tuple[int, str]]] = {uid: [] for uid in ids}
            if ids:
                for uid, rid, name in s.execute(
                    select(UserRole.user_id, Role.id, Role.name)
                    .join(Role, Role.id == UserRole.role_id)
                    .where(UserRole.user_id.in_(ids))
                    .order_by(Role.id)
                ):
                    roles[uid].append((rid, name))
            for u in users:
                s.expunge(u)
            for r in rows.values():
                s.expunge(r)
        return [
            (u, rows.get(u.id), roles[u.id]) for u in users if rows.get(u.id) is None or rows[u.id].deleted_at is None
        ]

    def _one_user(self, actor: Actor, user_id: str) -> tuple[Membership, ScimUser | None, list[tuple[int, str]]]:
        uid = _id(user_id)
        found = self._load_users(_tenant(actor), uid) if uid is not None else []
        if not found:
            raise NotFoundException(detail=f"No User with id {str(user_id)[:40]!r} in this tenant.")
        return found[0]

    def get_user(self, actor: Actor, base: str, user_id: str) -> dict[str, Any]:
        user, row, roles = self._one_user(actor, user_id)
        return self._user_dump(base, self._user_resource(base, user, row, roles), user, row)

    def list_users(
        self, actor: Actor, base: str, filter_: str | None, start: int, count: int, *, strict: bool = True
    ) -> Page:
        matcher = _filter(ScimFilter[ScimUserModel], filter_, strict)
        out = []
        for user, row, roles in self._load_users(_tenant(actor)):
            model = self._user_resource(base, user, row, roles)
            if matcher is None or matcher.match(model):
                out.append(self._user_dump(base, model, user, row))
        return _page(out, start, count)

    def create_user(self, actor: Actor, base: str, payload: Any) -> dict[str, Any]:
        model = _validate(ScimUserModel, payload, Context.RESOURCE_CREATION_REQUEST)
        if model.active is None:
            model.active = True  # a new membership is active unless the provider says otherwise
        tenant_id = _tenant(actor)
        user_name, email = _names(model)
        attrs = _attributes(model)
        revived = self._deleted_named(tenant_id, user_name)
        self._user_name_free(tenant_id, user_name, None if revived is None else revived)
        if revived is not None:
            if model.active is not False:
                self.access.reactivate_user(actor, revived)
            user_id = revived
        else:
            try:
                view, _ = self.access.create_user(
                    actor, tenant_id, email, None, [], external_id=_external(model.external_id), generate_password=False
                )
            except KbaiError as exc:
                raise kbai_error(exc) from None
            user_id = view.id
            if model.active is False:
                self.access.deactivate_user(actor, user_id)
        self._save_user_row(tenant_id, user_id, user_name, model.external_id, attrs, undelete=True)
        return self.get_user(actor, base, str(user_id))

    def replace_user(self, actor: Actor, base: str, user_id: str, payload: Any, if_match: str | None) -> dict[str, Any]:
        current = self.get_user(actor, base, user_id)
        _precondition(if_match, current)
        model = _validate(ScimUserModel, payload, Context.RESOURCE_REPLACEMENT_REQUEST)
        return self._apply_user(actor, base, int(current["id"]), model)

    def patch_user(self, actor: Actor, base: str, user_id: str, payload: Any, if_match: str | None) -> dict[str, Any]:
        user, row, roles = self._one_user(actor, user_id)
        model = self._user_resource(base, user, row, roles)
        _precondition(if_match, self._user_dump(base, model, user, row))
        patch = _validate(PatchOp[ScimUserModel], payload, Context.RESOURCE_PATCH_REQUEST)
        try:
            patch.patch(model)
        except SCIMException:
            raise
        except (ValueError, TypeError) as exc:
            raise InvalidValueException(detail=str(exc)[:300]) from None
        # The patched resource is validated again as a whole, as if it had been PUT.
        again = _validate(
            ScimUserModel,
            model.model_dump(scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST),
            Context.RESOURCE_REPLACEMENT_REQUEST,
        )
        return self._apply_user(actor, base, user.id, again)

    def _apply_user(self, actor: Actor, base: str, user_id: int, model: ScimUserModel) -> dict[str, Any]:
        tenant_id = _tenant(actor)
        user_name, _email = _names(model)
        self._user_name_free(tenant_id, user_name, user_id)
        with self.db.read() as s:
            user = s.get(Membership, user_id)
            assert user is not None
            active_now = bool(user.active)
        # kbai's own changes first: when an access rule refuses (the last admin), nothing else has changed.
        try:
            if model.active is False and active_now:
                self.access.deactivate_user(actor, user_id)
            elif model.active is True and not active_now:
                self.access.reactivate_user(actor, user_id)
        except KbaiError as exc:
            raise kbai_error(exc) from None
        self._save_user_row(tenant_id, user_id, user_name, model.external_id, _attributes(model))
        return self.get_user(actor, base, str(user_id))

    def delete_user(self, actor: Actor, user_id: str, if_match: str | None, base: str) -> None:
        """Deactivate the membership (sessions end, tokens stop) and hide the resource from SCIM."""
        current = self.get_user(actor, base, user_id)
        _precondition(if_match, current)
        uid = int(current["id"])
        try:
            self.access.deactivate_user(actor, uid)
        except KbaiError as exc:
            raise kbai_error(exc) from None
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            row = s.get(ScimUser, uid)
            if row is None:
                user = s.get(Membership, uid)
                assert user is not None
                row = ScimUser(
                    user_id=uid,
                    tenant_id=user.tenant_id,
                    user_name=user.email,
                    user_name_key=user.email.casefold(),
                    external_id=user.external_id,
                    attributes={},
                    updated_at=now,
                )
                s.add(row)
            row.deleted_at = now
            row.updated_at = now

    def _deleted_named(self, tenant_id: int, user_name: str) -> int | None:
        with self.db.read() as s:
            row = s.scalar(
                select(ScimUser).where(ScimUser.tenant_id == tenant_id, ScimUser.user_name_key == user_name.casefold())
            )
            return row.user_id if row is not None and row.deleted_at is not None else None

    def _user_name_free(self, tenant_id: int, user_name: str, user_id: int | None) -> None:
        """userName is unique in a tenant, case-insensitively, among SCIM names and the emails of members
        that SCIM has not named (their userName is their email)."""
        key = user_name.casefold()
        with self.db.read() as s:
            taken = s.scalar(
                select(ScimUser.user_id).where(ScimUser.tenant_id == tenant_id, ScimUser.user_name_key == key)
            )
            if taken is None:
                named = select(ScimUser.user_id)
                taken = s.scalar(
                    select(Membership.id).where(
                        Membership.tenant_id == tenant_id, Membership.email == key, Membership.id.not_in(named)
                    )
                )
        if taken is not None and taken != user_id:
            raise UniquenessException(detail=f"A User with userName {user_name!r} already exists in this tenant.")

    def _save_user_row(
        self,
        tenant_id: int,
        user_id: int,
        user_name: str,
        external_id: str | None,
        attrs: dict[str, Any],
        *,
        undelete: bool = False,
    ) -> None:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            row = s.get(ScimUser, user_id)
            if row is None:
                row = ScimUser(user_id=user_id, tenant_id=tenant_id, attributes={}, updated_at=now)
                s.add(row)
            row.user_name = user_name
            row.user_name_key = user_name.casefold()
            row.external_id = external_id
            row.attributes = attrs
            row.updated_at = now
            if undelete:
                row.deleted_at = None

    # ---- groups --------------------------------------------------------------------------
    def _load_groups(
        self, tenant_id: int, role_id: int | None = None
    ) -> list[tuple[Role, ScimGroup | None, list[tuple[int, str]]]]:
        with self.db.read() as s:
            query = select(Role).where(Role.tenant_id == tenant_id).order_by(Role.id)
            if role_id is not None:
                query = query.where(Role.id == role_id)
            roles = list(s.scalars(query))
            ids = [r.id for r in roles]
            extra = (
                {g.role_id: g for g in s.scalars(select(ScimGroup).where(ScimGroup.role_id.in_(ids)))} if ids else {}
            )
            members: dict[int, list[tuple[int, str]]] = {rid: [] for rid in ids}
            if ids:
                hidden = select(ScimUser.user_id).where(ScimUser.deleted_at.is_not(None))
                for rid, uid, email, name in s.execute(
                    select(UserRole.role_id, Membership.id, Membership.email, ScimUser.user_name)
                    .join(Membership, Membership.id == UserRole.user_id)
                    .outerjoin(ScimUser, ScimUser.user_id == Membership.id)
                    .where(UserRole.role_id.in_(ids), Membership.id.not_in(hidden))
                    .order_by(Membership.id)
                ):
                    members[rid].append((uid, name or email))
            for r in roles:
                s.expunge(r)
            for g in extra.values():
                s.expunge(g)
        return [(r, extra.get(r.id), members[r.id]) for r in roles]

    def _group_dump(
        self,
        base: str,
        role: Role,
        extra: ScimGroup | None,
        members: list[tuple[int, str]],
        matcher: Callable[[Group], bool] | None = None,
    ) -> dict[str, Any] | None:
        payload: dict[str, Any] = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": str(role.id),
            "displayName": role.name,
        }
        if extra is not None and extra.external_id is not None:
            payload["externalId"] = extra.external_id
        if members:
            shown = (extra.attributes or {}).get("displays", {}) if extra is not None else {}
            payload["members"] = [
                {
                    "value": str(uid),
                    "display": shown.get(str(uid), label),
                    "type": "User",
                    "$ref": f"{base}/Users/{uid}",
                }
                for uid, label in members
            ]
        model = Group.model_validate(payload)
        if matcher is not None and not matcher(model):
            return None
        body = model.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        modified = extra.updated_at if extra is not None and extra.updated_at > role.created_at else role.created_at
        body["meta"] = {
            "resourceType": "Group",
            "created": role.created_at.isoformat(),
            "lastModified": modified.isoformat(),
            "location": f"{base}/Groups/{role.id}",
            "version": etag(body),
        }
        return body

    def _one_group(self, actor: Actor, group_id: str) -> tuple[Role, ScimGroup | None, list[tuple[int, str]]]:
        rid = _id(group_id)
        found = self._load_groups(_tenant(actor), rid) if rid is not None else []
        if not found:
            raise NotFoundException(detail=f"No Group with id {str(group_id)[:40]!r} in this tenant.")
        return found[0]

    def get_group(self, actor: Actor, base: str, group_id: str) -> dict[str, Any]:
        body = self._group_dump(base, *self._one_group(actor, group_id))
        assert body is not None
        return body

    def list_groups(
        self, actor: Actor, base: str, filter_: str | None, start: int, count: int, *, strict: bool = True
    ) -> Page:
        matcher = _filter(ScimFilter[Group], filter_, strict)
        out = []
        for role, extra, members in self._load_groups(_tenant(actor)):
            body = self._group_dump(base, role, extra, members, None if matcher is None else matcher.match)
            if body is not None:
                out.append(body)
        return _page(out, start, count)

    def create_group(self, actor: Actor, base: str, payload: Any) -> dict[str, Any]:
        model = _validate(Group, payload, Context.RESOURCE_CREATION_REQUEST)
        tenant_id = _tenant(actor)
        name = (model.display_name or "").strip()
        if not name:
            raise InvalidValueException(detail="displayName is required: it becomes the role's name in kbai.")
        wanted = self._member_ids(tenant_id, model)
        try:
            view = self.access.create_role(actor, tenant_id, name, [])
        except KbaiError as exc:
            raise kbai_error(exc) from None
        self._save_group_row(tenant_id, view.id, model.external_id, _displays(model))
        self._set_members(actor, tenant_id, view.id, wanted)
        return self.get_group(actor, base, str(view.id))

    def replace_group(
        self, actor: Actor, base: str, group_id: str, payload: Any, if_match: str | None
    ) -> dict[str, Any]:
        current = self.get_group(actor, base, group_id)
        _precondition(if_match, current)
        model = _validate(Group, payload, Context.RESOURCE_REPLACEMENT_REQUEST)
        return self._apply_group(actor, base, int(current["id"]), model)

    def patch_group(self, actor: Actor, base: str, group_id: str, payload: Any, if_match: str | None) -> dict[str, Any]:
        role, extra, members = self._one_group(actor, group_id)
        current = self._group_dump(base, role, extra, members)
        assert current is not None
        _precondition(if_match, current)
        model = Group.model_validate({k: v for k, v in current.items() if k != "meta"})
        patch = _validate(PatchOp[Group], payload, Context.RESOURCE_PATCH_REQUEST)
        try:
            patch.patch(model)
        except SCIMException:
            raise
        except (ValueError, TypeError) as exc:
            raise InvalidValueException(detail=str(exc)[:300]) from None
        return self._apply_group(actor, base, role.id, model)

    def _apply_group(self, actor: Actor, base: str, role_id: int, model: Group) -> dict[str, Any]:
        tenant_id = _tenant(actor)
        role, _, _ = self._one_group(actor, str(role_id))
        name = (model.display_name or "").strip()
        if not name:
            raise InvalidValueException(detail="displayName is required: it is the role's name in kbai.")
        wanted = self._member_ids(tenant_id, model)
        try:
            if name != role.name:
                self.access.update_role(actor, role_id, name=name)
        except KbaiError as exc:
            raise kbai_error(exc) from None
        self._set_members(actor, tenant_id, role_id, wanted)
        self._save_group_row(tenant_id, role_id, model.external_id, _displays(model))
        return self.get_group(actor, base, str(role_id))

    def delete_group(self, actor: Actor, base: str, group_id: str, if_match: str | None) -> None:
        current = self.get_group(actor, base, group_id)
        _precondition(if_match, current)
        try:
            self.access.delete_role(actor, int(current["id"]))
        except KbaiError as exc:
            raise kbai_error(exc) from None

    def _member_ids(self, tenant_id: int, model: Group) -> set[int]:
        """The memberships a Group names, all of this tenant (else invalidValue, naming none of another's)."""
        wanted: set[int] = set()
        for member in model.members or []:
            uid = _id(member.value)
            if uid is None:
                raise InvalidValueException(detail=f"members value {str(member.value)[:40]!r} is no User id here.")
            wanted.add(uid)
        if wanted:
            with self.db.read() as s:
                hidden = select(ScimUser.user_id).where(ScimUser.deleted_at.is_not(None))
                found = set(
                    s.scalars(
                        select(Membership.id).where(
                            Membership.id.in_(sorted(wanted)),
                            Membership.tenant_id == tenant_id,
                            Membership.id.not_in(hidden),
                        )
                    )
                )
            missing = wanted - found
            if missing:
                raise InvalidValueException(detail=f"members value {str(min(missing))!r} is no User of this tenant.")
        return wanted

    def _set_members(self, actor: Actor, tenant_id: int, role_id: int, wanted: set[int]) -> None:
        """Give the role to exactly ``wanted``: one AccessService change per person whose roles change."""
        with self.db.read() as s:
            holders = set(s.scalars(select(UserRole.user_id).where(UserRole.role_id == role_id)))
            hidden = set(
                s.scalars(
                    select(ScimUser.user_id).where(ScimUser.tenant_id == tenant_id, ScimUser.deleted_at.is_not(None))
                )
            )
            holders -= hidden
            changes: dict[int, list[int]] = {}
            for uid in (wanted - holders) | (holders - wanted):
                roles = set(s.scalars(select(UserRole.role_id).where(UserRole.user_id == uid)))
                changes[uid] = sorted(roles | {role_id} if uid in wanted else roles - {role_id})
        # Removals last: a member moved between groups never passes through holding neither.
        for uid in sorted(changes, key=lambda u: u not in wanted):
            try:
                self.access.set_user_roles(actor, uid, changes[uid])
            except KbaiError as exc:
                raise kbai_error(exc) from None

    def _save_group_row(self, tenant_id: int, role_id: int, external_id: str | None, displays: dict[str, str]) -> None:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            row = s.get(ScimGroup, role_id)
            if row is None:
                row = ScimGroup(role_id=role_id, tenant_id=tenant_id, attributes={}, updated_at=now)
                s.add(row)
            if row.external_id != external_id or (row.attributes or {}).get("displays") != displays:
                row.updated_at = now
            row.external_id = external_id
            row.attributes = {"displays": displays}


# ---- helpers ---------------------------------------------------------------------------------
def _displays(model: Group) -> dict[str, str]:
    """The ``display`` the provider gave each member (shown back as sent; the userName otherwise)."""
    return {str(m.value): str(m.display)[:254] for m in model.members or [] if m.value and m.display}


def _tenant(actor: Actor) -> int:
    assert actor.kind == "scim" and actor.tenant_id is not None
    return actor.tenant_id


def _id(value: object) -> int | None:
    text = str(value or "")
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    number = int(text)
    return number if 1 <= number <= 2_147_483_647 else None


def _validate(model: Any, payload: Any, ctx: Context) -> Any:
    if not isinstance(payload, dict):
        raise InvalidSyntaxException(detail="The body must be a JSON object.")
    if "\\u0000" in json.dumps(payload):
        raise InvalidValueException(detail="The body holds a NUL character (U+0000), which no attribute may contain.")
    if ctx in (Context.RESOURCE_CREATION_REQUEST, Context.RESOURCE_REPLACEMENT_REQUEST):
        core = str(getattr(model, "__schema__", ""))
        listed = payload.get("schemas")
        if not isinstance(listed, list) or core not in [str(x) for x in listed]:
            raise InvalidValueException(detail=f"schemas must list {core}.")
    try:
        return model.model_validate(payload, scim_ctx=ctx)
    except SCIMException:
        raise
    except ValidationError as exc:
        raise validation_error(exc) from None
    except (ValueError, TypeError) as exc:
        raise InvalidValueException(detail=str(exc)[:300]) from None


def _filter(kind: Any, text: str | None, strict: bool = True) -> Any:
    if text is None or not text.strip():
        return None
    if len(text) > 1000:
        raise InvalidFilterException(detail="The filter is longer than 1000 characters.")
    try:
        matcher = kind(text)
        # An attribute the resource does not have is the client's error, except at the root, where RFC 7644
        # §3.4.2.1 has it match nothing for the resource types that lack it.
        matcher._validate_semantics(strict=strict)
    except SCIMException as exc:
        raise InvalidFilterException(detail=str(exc)[:300]) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidFilterException(detail=str(exc)[:300]) from None
    return matcher


def search_all(scim: Scim, actor: Actor, base: str, filter_: str | None, start: int, count: int) -> Page:
    """``POST /.search`` at the root: Users then Groups."""
    users = scim.list_users(actor, base, filter_, 1, 10**9, strict=False)
    groups = scim.list_groups(actor, base, filter_, 1, 10**9, strict=False)
    return _page(users.resources + groups.resources, start, count)


def _page(items: list[dict[str, Any]], start: int, count: int) -> Page:
    start = max(start, 1)
    count = max(count, 0)
    return Page(len(items), start, items[start - 1 : start - 1 + count])


def _precondition(if_match: str | None, current: dict[str, Any]) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    tags = {t.strip() for t in if_match.split(",")}
    version = current["meta"]["version"]
    if version not in tags and version.removeprefix("W/") not in tags:
        raise PreconditionFailedException(
            detail="The resource changed since you read it (If-Match does not match "
            "meta.version): read it again and retry."
        )


def _external(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 200:
        raise InvalidValueException(detail="externalId must be 1 to 200 characters.")
    return text


def _names(model: Any) -> tuple[str, str]:
    """(userName, the person's email): the primary ``emails`` value, else the first, else the userName
    when it is an email (SPEC)."""
    from kbai.validate import clean_email, clean_name

    try:
        user_name = clean_name(model.user_name or "", "userName", max_length=254)
    except KbaiError as exc:
        raise InvalidValueException(detail=exc.message) from None
    emails = [e for e in (model.emails or []) if e.value]
    primary = next((e for e in emails if e.primary), emails[0] if emails else None)
    _external(model.external_id)
    if primary is not None:
        try:
            return user_name, clean_email(str(primary.value))
        except KbaiError:
            raise InvalidValueException(
                detail=f"emails value {str(primary.value)[:60]!r} is not an email address "
                "kbai accepts (name@company.com)."
            ) from None
    try:
        return user_name, clean_email(user_name)
    except KbaiError:
        # SPEC: SCIM accepts any userName. A person with no email at all gets an address under the reserved
        # .invalid name (RFC 2606), which nothing can deliver to and no sign-in can link to; SCIM never shows it.
        return user_name, f"scim-{secrets.token_hex(12)}@{NO_EMAIL_DOMAIN}"


def _attributes(model: Any) -> dict[str, Any]:
    body = model.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    kept = {k: v for k, v in body.items() if k not in _OWNED}
    if model.active is None:
        kept[_ACTIVE_UNSET] = True
    return kept

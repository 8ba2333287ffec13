"""The Roles pages (roles.manage) and the grant/dismiss buttons of "Ask an admin" requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from kbai import errors
from kbai.access.service import require
from kbai.errors import KbaiError
from kbai.tokenformat import redact
from kbai.validate import clean_name
from kbai.web.auth import Principal, services
from kbai.web.pages.base import Id, PageRoute, admin_requests, check_form, page_user, render, see_other
from kbai.web.pages.forms import _person_words, grouped, ids
from kbai.web.pages.new_token import NAME_LIMIT

router = APIRouter(route_class=PageRoute, include_in_schema=False)


# ---- roles --------------------------------------------------------------------------------------
@router.get("/system-settings/roles")
def roles_page(request: Request) -> Response:
    p = page_user(request)
    return _roles_page(request, p)


def _roles_page(
    request: Request, p: Principal, error: KbaiError | None = None, new_name: str = "", field: str | None = None
) -> HTMLResponse:
    if error is not None and "roles.read" not in p.actor.permissions:
        raise error  # no page to show it on: the error page says what went wrong
    svc = services(request)
    assert p.actor.tenant_id is not None
    roles = svc.access.list_roles(p.actor, p.actor.tenant_id)
    return render(
        request,
        "roles.html",
        p,
        status=error.status if error else 200,
        roles=roles,
        catalog_size=len(svc.catalog.permissions),
        requests=admin_requests(svc).pending(p.actor),
        error=error if field is None else None,
        field_errors={field: error} if field else {},
        new_name=redact(new_name),
        labels={perm.key: perm.label for perm in svc.catalog.permissions},
    )


def _role_name(value: str) -> str:
    """The new role's name, checked with the person's words for the usual mistakes (empty, too long)."""
    text = value.strip()
    if not text:
        raise KbaiError(errors.FIELD_ROLE_NAME_EMPTY)
    if len(text) > NAME_LIMIT:
        raise KbaiError(errors.FIELD_NAME_TOO_LONG, length=len(text), limit=NAME_LIMIT)
    try:
        return clean_name(value, "role name")
    except KbaiError as err:
        raise _person_words(err, "role name", "role name") from None


@router.post("/system-settings/roles")
def create_role(
    request: Request,
    name: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    assert p.actor.tenant_id is not None
    require(p.actor, "roles.manage", "create roles", p.actor.tenant_id)
    try:
        clean = _role_name(name)
        role = services(request).access.create_role(p.actor, p.actor.tenant_id, clean, [])
    except KbaiError as err:
        if err.code == "forbidden":
            raise
        if err.code == "already_exists":
            err = KbaiError(errors.FIELD_ROLE_NAME_TAKEN, name=name.strip())
        return _roles_page(request, p, err, name, field="name")
    return see_other(f"/system-settings/roles/{role.id}?done=role_created")


@router.get("/system-settings/roles/{role_id}")
def role_page(request: Request, role_id: Id) -> Response:
    p = page_user(request)
    return _role_page(request, p, role_id)


def _role_page(
    request: Request, p: Principal, role_id: int, error: KbaiError | None = None, checked: list[str] | None = None
) -> HTMLResponse:
    if error is not None and "roles.read" not in p.actor.permissions:
        raise error
    svc = services(request)
    role = svc.access.get_role(p.actor, role_id)
    members = None
    if "users.read" in p.actor.permissions:
        assert p.actor.tenant_id is not None
        members = [u for u in svc.access.list_users(p.actor, p.actor.tenant_id) if role.name in u.roles]
    waiting = [r for r in admin_requests(svc).pending(p.actor) if any(rid == role.id for rid, _ in r.roles)]
    return render(
        request,
        "role.html",
        p,
        status=error.status if error else 200,
        role=role,
        groups=grouped(svc.catalog),
        checked=set(role.permissions if checked is None else checked),
        is_admin_role=role.builtin and role.name == "Admin",
        members=members,
        requests=waiting,
        error=error,
    )


@router.post("/system-settings/roles/{role_id}")
def save_role(
    request: Request,
    role_id: Id,
    permissions: Annotated[list[str] | None, Form()] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    try:
        services(request).access.update_role(p.actor, role_id, permissions or [])
    except KbaiError as err:
        if err.code in ("forbidden", "not_found"):
            raise
        return _role_page(request, p, role_id, err, permissions or [])
    return see_other(f"/system-settings/roles/{role_id}?done=saved")


# ---- "Ask an admin" requests --------------------------------------------------------------------
@router.post("/system-settings/requests/{request_id}/grant")
def grant_request(
    request: Request,
    request_id: Id,
    role_id: Annotated[str, Form(max_length=20)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    (rid,) = ids([role_id or "0"], "role")
    admin_requests(services(request)).grant(p.actor, request_id, rid)
    return see_other(f"/system-settings/roles/{rid}?done=granted")


@router.post("/system-settings/requests/{request_id}/dismiss")
def dismiss_request(
    request: Request, request_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    p = check_form(request, csrf_token)
    admin_requests(services(request)).dismiss(p.actor, request_id)
    return see_other("/system-settings/roles?done=dismissed")

"""The Users page (users.manage): add, invite, set roles, deactivate and reactivate members. Deactivating someone
who holds working tokens goes through a confirmation page that lets an admin keep some as service tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from kbai import errors
from kbai.access.catalog import MANAGE_SERVICE_TOKENS
from kbai.access.service import require
from kbai.errors import KbaiError
from kbai.store.audit import Actor
from kbai.tokenformat import redact
from kbai.validate import clean_email
from kbai.web.api import deactivate_member, invite_member
from kbai.web.auth import Principal, services
from kbai.web.pages.base import Id, PageRoute, admin_requests, check_form, page_user, render, see_other
from kbai.web.pages.forms import ids

router = APIRouter(route_class=PageRoute, include_in_schema=False)


# ---- users --------------------------------------------------------------------------------------
@router.get("/system-settings/users")
def users_page(request: Request) -> Response:
    p = page_user(request)
    return _users_page(request, p)


def _users_page(
    request: Request,
    p: Principal,
    error: KbaiError | None = None,
    *,
    status: int | None = None,
    form: dict[str, Any] | None = None,
    invitation: dict[str, Any] | None = None,
    field: str | None = None,
) -> HTMLResponse:
    if error is not None and "users.read" not in p.actor.permissions:
        raise error
    svc = services(request)
    assert p.actor.tenant_id is not None
    users = svc.access.list_users(p.actor, p.actor.tenant_id)
    # Assigning roles needs their names; people who manage users may see them without roles.read.
    reader = p.actor if "roles.read" in p.actor.permissions else Actor.operator()
    roles = svc.access.list_roles(reader, p.actor.tenant_id)
    # Only roles whose permissions you hold can be handed out, only by someone who holds all a person holds.
    assignable, manageable = svc.access.manageable(p.actor, p.actor.tenant_id)
    response = render(
        request,
        "users.html",
        p,
        status=status or (error.status if error else 200),
        users=users,
        roles=roles,
        requests=admin_requests(svc).pending(p.actor),
        error=error if field is None else None,
        field_errors={field: error} if field else {},
        form=form or {"email": "", "roles": []},
        invitation=invitation,
        token_counts=svc.tokens.counts_by_user(p.actor.tenant_id),
        assignable=assignable,
        manageable=manageable,
    )
    return response


@router.post("/system-settings/users")
def create_user(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    roles: Annotated[list[str] | None, Form()] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str | None, Form(max_length=1024)] = None,
) -> Response:
    """Adds the person (created when new) and shows their one-time invitation link: never a password, and the
    same page whether the person existed in another tenant or not."""
    p = check_form(request, csrf_token)
    assert p.actor.tenant_id is not None
    svc = services(request)
    field = None
    try:
        require(p.actor, "users.manage", "create users", p.actor.tenant_id)
        if password is not None:  # (an old form or a script): a member's password is theirs to choose
            raise KbaiError(errors.NO_PASSWORD_FOR_MEMBERS)
        field = "email"
        try:
            clean_email(email)
        except KbaiError:
            raise KbaiError(errors.FIELD_EMAIL_INVALID) from None
        field = None
        view, url, _expires = invite_member(svc, request, p.actor, email, ids(roles, "role"))
    except KbaiError as err:
        if err.code == "forbidden" and err.params.get("action") == "create users":
            raise
        if err.code == "already_exists":
            field, err = "email", KbaiError(errors.FIELD_EMAIL_TAKEN, email=redact(email.strip().lower()))
        return _users_page(request, p, err, form={"email": redact(email), "roles": roles or []}, field=field)
    # Shown once, like a token: no redirect, nothing cached.
    return _users_page(
        request, p, status=201, invitation={"email": view.email, "url": url, "emailed": svc.outbox.mail_enabled}
    )


@router.post("/system-settings/users/{user_id}/roles")
def set_user_roles(
    request: Request,
    user_id: Id,
    roles: Annotated[list[str] | None, Form()] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    try:
        services(request).access.set_user_roles(p.actor, user_id, ids(roles, "role"))
    except KbaiError as err:
        return _users_page(request, p, err)
    return see_other("/system-settings/users?done=roles_saved")


@router.get("/system-settings/users/{user_id}/deactivate")
def deactivate_page(request: Request, user_id: Id) -> Response:
    """The confirmation step: the person's working tokens, each to let stop (the default) or keep for the tenant."""
    return _deactivate_page(request, page_user(request), user_id)


def _deactivate_page(request: Request, p: Principal, user_id: int, error: KbaiError | None = None) -> HTMLResponse:
    svc = services(request)
    assert p.actor.tenant_id is not None
    require(p.actor, "users.manage", "deactivate users", p.actor.tenant_id)
    user = svc.access.get_user(p.actor, user_id)  # 404 outside the tenant
    can_keep = MANAGE_SERVICE_TOKENS in p.actor.permissions
    active, limit = svc.tokens.service_allowance(p.actor.tenant_id)
    return render(
        request,
        "deactivate.html",
        p,
        status=error.status if error else 200,
        error=error,
        user=user,
        tokens=svc.tokens.active_of(user.id) if user.active else [],
        can_keep=can_keep,
        service_active=active,
        service_limit=limit,
        labels={perm.key: perm.label for perm in svc.catalog.permissions},
    )


@router.post("/system-settings/users/{user_id}/deactivate")
def deactivate_user(
    request: Request,
    user_id: Id,
    hand_over: Annotated[list[str] | None, Form()] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Deactivate; ``hand_over`` carries one value per token of the confirmation step: its id to keep it as a
    service token, empty to let it stop."""
    p = check_form(request, csrf_token)
    keep = ids([v for v in hand_over or [] if v], "token")
    try:
        deactivate_member(services(request), p.actor, user_id, keep)
    except KbaiError as err:
        if keep and err.status != 404:  # the confirmation step again, with what went wrong (nothing changed)
            return _deactivate_page(request, p, user_id, err)
        return _users_page(request, p, err)
    if user_id == p.actor.user_id:
        return see_other("/login")
    return see_other(f"/system-settings/users?done={'deactivated_kept' if keep else 'deactivated'}")


@router.post("/system-settings/users/{user_id}/reactivate")
def reactivate_user(request: Request, user_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    try:
        services(request).access.reactivate_user(p.actor, user_id)
    except KbaiError as err:
        return _users_page(request, p, err)
    return see_other("/system-settings/users?done=reactivated")

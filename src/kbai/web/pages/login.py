"""Sign-in and sign-out, the tenant picker and switch, invitations, and the System Settings home."""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from kbai import errors
from kbai.access.passwords import MIN_LENGTH as MIN_PASSWORD
from kbai.compare import same_secret
from kbai.errors import KbaiError
from kbai.tokenformat import redact
from kbai.web import prefix
from kbai.web.api import set_session_cookie
from kbai.web.auth import SESSION_COOKIE, client_ip, services, session_principal
from kbai.web.pages.base import (
    HOME,
    INVITATIONS,
    INVITE_CSRF_COOKIE,
    LOGIN_CSRF_COOKIE,
    TENANT_PICKER,
    PageRoute,
    check_form,
    my_roles,
    page_user,
    render,
    safe_next,
    see_other,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


# ---- login / logout -----------------------------------------------------------------------------
@router.get("/")
def root(request: Request) -> Response:
    return see_other(HOME)


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the query name
    svc = services(request)
    if session_principal(svc, request) is not None:
        return see_other(safe_next(next))
    return _login_page(request, safe_next(next), "")


def _login_page(request: Request, next_path: str, email: str, error: KbaiError | None = None) -> HTMLResponse:
    # Login CSRF: a random value in a cookie and in the form must match (double submit).
    value = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        None,
        status=error.status if error else 200,
        next=redact(next_path),
        email=redact(email),
        error=error,
        login_csrf=value,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        value,
        max_age=3600,
        httponly=True,
        samesite="strict",
        path=prefix.cookie_path("/login"),
        secure=services(request).settings.cookie_secure,
    )
    if error is not None and "retry_after" in error.params:
        response.headers["Retry-After"] = str(error.params["retry_after"])
    return response


@router.post("/login")
def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=300)] = HOME,  # noqa: A002
) -> Response:
    svc = services(request)
    target = safe_next(next)
    cookie_value = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie_value or not csrf_token or not same_secret(csrf_token, cookie_value):
        return _login_page(request, target, email, KbaiError(errors.FORM_EXPIRED))
    try:  # the same failure limits as the API's, counted by the session service
        cookie, info = svc.sessions.login(email, password, client_ip(request))
    except KbaiError as err:
        if err.status == 429:
            svc.metrics.rate_limited.labels("login").inc()
        return _login_page(request, target, email, err)
    assert info.person_id is not None
    if sum(m.active for m in svc.access.memberships(info.person_id)) > 1:  # several tenants: pick one first
        target = TENANT_PICKER + ("" if target == HOME else f"?next={quote(target, safe='/')}")
    response = see_other(target)
    set_session_cookie(response, cookie, svc.settings.session_ttl_seconds, svc.settings.cookie_secure)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=prefix.cookie_path("/login"))
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    assert p.session is not None
    services(request).sessions.logout(p.session, client_ip(request))
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path=prefix.cookie_path())
    return response


# ---- tenants: the picker after login, and the switch in the header -------------------------------
@router.get(TENANT_PICKER)
def tenant_picker(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the query name
    p = page_user(request)
    assert p.actor.person_id is not None
    tenants = [m for m in services(request).access.memberships(p.actor.person_id) if m.active]
    return render(request, "tenant_picker.html", p, tenants=tenants, next=redact(safe_next(next)))


@router.post(TENANT_PICKER)
def switch_tenant(
    request: Request,
    tenant: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=300)] = HOME,  # noqa: A002
) -> Response:
    """A new session in the chosen tenant (new cookie and CSRF token; the old session ends)."""
    p = check_form(request, csrf_token)
    assert p.session is not None
    svc = services(request)
    if not tenant.isascii() or not tenant.isdigit() or len(tenant) > 10:
        raise KbaiError(errors.VALIDATION, detail="Pick one of your tenants from the list.")
    cookie, _info = svc.sessions.switch(
        p.session, request.cookies.get(SESSION_COOKIE) or "", int(tenant), client_ip(request)
    )
    target = safe_next(next)
    if target.startswith(TENANT_PICKER):
        target = HOME
    response = see_other(target)
    set_session_cookie(response, cookie, svc.settings.session_ttl_seconds, svc.settings.cookie_secure)
    return response


# ---- invitations: a new member sets a password, an existing person confirms with their login ------
@router.get(INVITATIONS + "/{secret}")
def invitation_page(request: Request, secret: Annotated[str, PathParam(max_length=200)]) -> Response:
    found = services(request).access.invitation(secret)
    return _invitation_page(request, secret, found)


def _invitation_page(request: Request, secret: str, found: Any, error: KbaiError | None = None) -> HTMLResponse:
    value = secrets.token_urlsafe(24)
    response = render(
        request,
        "invitation.html",
        None,
        status=error.status if error else 200,
        invitation=found,
        secret=secret,
        error=error,
        invite_csrf=value,
        min_password=MIN_PASSWORD,
    )
    response.set_cookie(
        INVITE_CSRF_COOKIE,
        value,
        max_age=3600,
        httponly=True,
        samesite="strict",
        path=INVITATIONS,
        secure=services(request).settings.cookie_secure,
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.post(INVITATIONS + "/{secret}")
def accept_invitation(
    request: Request,
    secret: Annotated[str, PathParam(max_length=200)],
    password: Annotated[str, Form(max_length=1024)] = "",
    password_again: Annotated[str | None, Form(max_length=1024)] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    svc = services(request)
    found = svc.access.invitation(secret)
    cookie_value = request.cookies.get(INVITE_CSRF_COOKIE, "")
    if not cookie_value or not csrf_token or not same_secret(csrf_token, cookie_value):
        return _invitation_page(request, secret, found, KbaiError(errors.FORM_EXPIRED))
    try:
        if found.sets_password and password != (password_again or ""):
            raise KbaiError(errors.VALIDATION, detail="The two passwords are not the same. Type it twice.")
        cookie, _info = svc.sessions.accept_invitation(secret, password, client_ip(request))
    except KbaiError as err:
        if err.code == "invitation_invalid":
            raise
        return _invitation_page(request, secret, found, err)
    response = see_other(HOME)
    set_session_cookie(response, cookie, svc.settings.session_ttl_seconds, svc.settings.cookie_secure)
    response.delete_cookie(INVITE_CSRF_COOKIE, path=INVITATIONS)
    return response


# ---- System Settings ----------------------------------------------------------------------------
@router.get("/system-settings")
def settings_home(request: Request) -> Response:
    p = page_user(request)
    return render(request, "settings.html", p, my_roles=my_roles(services(request), p))

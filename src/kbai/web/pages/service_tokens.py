"""Service tokens on the API Keys page (developer.manage_service_tokens): the "New service token" form, which
makes a token owned by the tenant, and rotate, pause, resume and revoke. A new or rotated token is shown once on
API Keys, as a personal one is."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from kbai import errors
from kbai.access.catalog import MANAGE_SERVICE_TOKENS
from kbai.errors import KbaiError
from kbai.tokenformat import redact
from kbai.tokens.restrictions import (
    MAX_ALLOWED_IPS,
    PER_SECONDS,
    REFILL_INTERVALS,
)
from kbai.web.auth import Principal, services
from kbai.web.pages.api_keys import API_KEYS, _set_paused
from kbai.web.pages.base import Id, PageRoute, _put_flash, check_form, page_user, render, see_other
from kbai.web.pages.forms import grouped
from kbai.web.pages.new_token import CREATE_FIELDS, FieldError, _expiry, _token_name, form_restrictions
from kbai.web.pages.rotation import rotate_from_page
from kbai.web.pages.token_rows import _policy_form

router = APIRouter(route_class=PageRoute, include_in_schema=False)
SERVICE_TOKENS = API_KEYS + "/service-tokens"


def _holder(p: Principal, action: str) -> None:
    """Only a holder of developer.manage_service_tokens sees these pages (the service checks again as it acts)."""
    if MANAGE_SERVICE_TOKENS not in p.actor.permissions:
        raise KbaiError(errors.NO_SERVICE_TOKEN_PERMISSION, action=action)


@router.get(SERVICE_TOKENS + "/new")
def new_service_token_page(request: Request) -> Response:
    p = page_user(request)
    return _new_page(request, p)


def _new_page(
    request: Request,
    p: Principal,
    error: KbaiError | None = None,
    *,
    form: dict[str, Any] | None = None,
    field: str | None = None,
) -> HTMLResponse:
    _holder(p, "create service tokens")
    svc = services(request)
    assert p.actor.tenant_id is not None
    now = svc.clock.now()
    policy = svc.policies.get(p.actor.tenant_id)
    rules = _policy_form(policy, now)
    active, limit = svc.tokens.service_allowance(p.actor.tenant_id)
    return render(
        request,
        "service_token_new.html",
        p,
        status=error.status if error else 200,
        error=error if field is None else None,
        field_errors={field: error} if field else {},
        groups=grouped(svc.catalog, svc.catalog.token_usable(p.actor.permissions)),
        form=form
        or {
            "name": "",
            "scopes": [],
            "expiry": rules["default_expiry"],
            "expires_on": "",
            "description": "",
            "allowed_ips": "",
        },
        service_form=True,  # no self-rotation among the restrictions: a service token does not rotate (yet)
        require_allowlist=policy.require_allowlist,
        max_allowed_ips=MAX_ALLOWED_IPS,
        active=active,
        limit=limit,
        at_limit=active >= limit,
        support_email=svc.tokens.support_email,
        examples=("Billing sync", "Nightly backup", "Status page"),
        tomorrow=(now.date() + timedelta(days=1)).isoformat(),
        **rules,
    )


@router.post(SERVICE_TOKENS)
def create_service_token(
    request: Request,
    name: Annotated[str, Form(max_length=1000)] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
    expiry: Annotated[str, Form(max_length=20)] = "",
    expires_on: Annotated[str, Form(max_length=40)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    allowed_ips: Annotated[str, Form(max_length=3000)] = "",
    rate_requests: Annotated[str, Form(max_length=40)] = "",
    rate_per: Annotated[str, Form(max_length=10)] = "minute",
    quota_requests: Annotated[str, Form(max_length=40)] = "",
    quota_refill: Annotated[str, Form(max_length=10)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    _holder(p, "create service tokens")
    svc = services(request)
    # Echoed back on an error: a pasted token must not come back in the page (cut to its display prefix).
    form = {
        "name": redact(name),
        "scopes": scopes or [],
        "expiry": expiry,
        "expires_on": redact(expires_on),
        "description": redact(description),
        "allowed_ips": redact(allowed_ips),
        "rate_requests": redact(rate_requests),
        "rate_per": rate_per if rate_per in PER_SECONDS else "minute",
        "quota_requests": redact(quota_requests),
        "quota_refill": quota_refill if quota_refill in REFILL_INTERVALS else "",
    }
    field = None
    try:
        field = "name"
        clean = _token_name(name)
        field = "scopes"
        if not scopes:
            raise KbaiError(errors.FIELD_SERVICE_SCOPES_NONE)
        field = "expiry"
        days, until = _expiry(expiry, expires_on, svc.clock.now().date())
        field = None
        restrictions = form_restrictions(
            description, allowed_ips, rate_requests, rate_per, quota_requests, quota_refill
        )
        view, plaintext = svc.tokens.create_service(
            p.actor, clean, scopes, expires_in_days=days, expires_at=until, **restrictions
        )
    except (KbaiError, FieldError) as exc:
        err, field = (exc.error, exc.field) if isinstance(exc, FieldError) else (exc, field)
        if err.code == "forbidden":
            raise
        field = field or CREATE_FIELDS.get(err.code)
        return _new_page(request, p, err, form=form, field=field)
    # As for a personal token: the plaintext travels in the session's sealed flash, never in a URL.
    _put_flash(request, p, {"kind": "service_created", "id": view.id, "token": plaintext})
    return see_other(API_KEYS)


@router.post(SERVICE_TOKENS + "/{token_id}/revoke")
def revoke_service_token(
    request: Request, token_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    p = check_form(request, csrf_token)
    view = services(request).tokens.revoke_service(p.actor, token_id)
    return see_other(f"{API_KEYS}?{urlencode({'done': 'revoked', 'token': view.id})}#service-tokens")


@router.post(SERVICE_TOKENS + "/{token_id}/rotate")
def rotate_service_token(
    request: Request,
    token_id: Id,
    grace: Annotated[str, Form(max_length=20)] = "",
    lifetime: Annotated[str, Form(max_length=20)] = "same",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """As a personal token's Rotate: the same dialog (grace, lifetime); the new token is the tenant's."""
    return rotate_from_page(request, token_id, grace, lifetime, csrf_token, service=True)


@router.post(SERVICE_TOKENS + "/{token_id}/pause")
def pause_service_token(
    request: Request, token_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    return _set_paused(request, token_id, csrf_token, paused=True, service=True)


@router.post(SERVICE_TOKENS + "/{token_id}/resume")
def resume_service_token(
    request: Request, token_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    return _set_paused(request, token_id, csrf_token, paused=False, service=True)

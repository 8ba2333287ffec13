"""The API Keys page: the person's tokens, and revoke, pause, resume and "Ask an admin"; below them the tenant's
service tokens for a holder of developer.manage_service_tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from kbai import errors
from kbai.access.catalog import MANAGE_SERVICE_TOKENS, MANAGE_TOKENS
from kbai.errors import KbaiError
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.tokens.policy import Policy
from kbai.tokens.restrictions import MAX_ALLOWED_IPS
from kbai.tokens.service import TokenView
from kbai.web.auth import Principal, services
from kbai.web.pages.base import (
    TOKEN_EXAMPLES,
    Id,
    PageRoute,
    _take_flash,
    admin_requests,
    check_form,
    my_roles,
    page_user,
    render,
    see_other,
)
from kbai.web.pages.forms import grouped
from kbai.web.pages.token_rows import DEFAULT_GRACE, GRACE_CHOICES, _lag, _policy_form, _token_rows

router = APIRouter(route_class=PageRoute, include_in_schema=False)


# ---- API keys -----------------------------------------------------------------------------------
API_KEYS = "/system-settings/api-keys"


@router.get("/system-settings/api-keys")
def api_keys_page(request: Request, done: str | None = None, token: str | None = None) -> Response:
    p = page_user(request)
    svc = services(request)
    created = rotated = None
    flash = _take_flash(request, p)
    try:
        if flash and flash.get("kind") == "created":
            created = (svc.tokens.get(p.actor, int(flash["id"])), str(flash["token"]))
        elif flash and flash.get("kind") == "service_created":
            created = (svc.tokens.get_service(p.actor, int(flash["id"])), str(flash["token"]))
        elif flash and flash.get("kind") in ("rotated", "service_rotated"):
            get = svc.tokens.get_service if flash["kind"] == "service_rotated" else svc.tokens.get
            rotated = (get(p.actor, int(flash["id"])), str(flash["token"]), get(p.actor, int(flash["old_id"])))
    except (KbaiError, KeyError, TypeError, ValueError):
        created = rotated = None  # a flash about a token that is gone: nothing to show
    revoked_id = (
        int(token) if done == "revoked" and token and token.isascii() and token.isdigit() and len(token) <= 10 else None
    )
    return _api_keys_page(request, p, created=created, rotated=rotated, revoked_id=revoked_id)


def _api_keys_page(
    request: Request,
    p: Principal,
    error: KbaiError | None = None,
    *,
    status: int | None = None,
    form: dict[str, Any] | None = None,
    created: tuple[TokenView, str] | None = None,
    rotated: tuple[TokenView, str, TokenView] | None = None,
    error_at: str = "create",
    field: str | None = None,
    revoked_id: int | None = None,
) -> HTMLResponse:
    svc = services(request)
    assert p.actor.user_id is not None and p.actor.tenant_id is not None
    now = svc.clock.now()
    can_manage = MANAGE_TOKENS in p.actor.permissions
    policy = svc.policies.get(p.actor.tenant_id)
    tokens: list[TokenView] = svc.tokens.list(p.actor.user_id, limit=1000)
    service = _service_section(svc, p.actor, policy, now) if MANAGE_SERVICE_TOKENS in p.actor.permissions else None
    shown = tokens + (service["tokens"] if service else [])
    revoked_view = next((t for t in shown if t.id == revoked_id and t.status == "revoked"), None)
    roles = my_roles(svc, p)
    asked = admin_requests(svc).open_requests(p.actor.user_id)
    ctx: dict[str, Any] = {
        "can_manage": can_manage,
        "rows": _token_rows(svc, tokens, policy, now),
        "error": error if field is None else None,
        "field_errors": {field: error} if field else {},
        "error_at": error_at if can_manage else "top",
        "created": created,
        "rotated": rotated,
        "labels": {perm.key: perm.label for perm in svc.catalog.permissions},
        "grace_choices": GRACE_CHOICES,
        "default_grace": DEFAULT_GRACE,
        "my_roles": roles,
        "revoked_view": revoked_view,
        "lag": _lag(svc.settings.last_used_flush_seconds),
        "asked": [(svc.catalog.label(k), k, at) for k, at in asked.items()],
        "service": service,
    }
    if revoked_view is not None:
        ctx["notice"] = None  # the page names the token instead of the generic words
    if can_manage:
        active, limit = svc.tokens.allowance(p.actor.user_id)
        rules = _policy_form(policy, now)
        usable = svc.catalog.token_usable(p.actor.permissions)
        # What an admin could add for tokens: usable permissions of the catalog this person lacks.
        askable = [
            perm
            for perm in svc.catalog.permissions
            if not perm.session_only and perm.key not in p.actor.permissions and perm.key not in asked
        ]
        ctx.update(
            active=active,
            limit=limit,
            at_limit=active >= limit,
            support_email=svc.tokens.support_email,
            groups=grouped(svc.catalog, usable),
            askable=askable,
            examples=TOKEN_EXAMPLES,
            tomorrow=(now.date() + timedelta(days=1)).isoformat(),
            form=form
            or {
                "name": "",
                "scopes": [],
                "expiry": rules["default_expiry"],
                "expires_on": "",
                "identity_only": False,
                "description": "",
                "allowed_ips": "",
                "self_rotate": False,
            },
            require_allowlist=policy.require_allowlist,
            max_allowed_ips=MAX_ALLOWED_IPS,
            **rules,
        )
    else:
        ctx["asked_at"] = asked.get(MANAGE_TOKENS)
    response = render(request, "api_keys.html", p, status=status or (error.status if error else 200), **ctx)
    return response


def _service_section(svc: Services, actor: Actor, policy: Policy, now: datetime) -> dict[str, Any]:
    """The tenant's service tokens as the page's second table shows them, with the allowance and their creators."""
    assert actor.tenant_id is not None
    tokens = svc.tokens.list_service(actor, limit=1000)
    active, limit = svc.tokens.service_allowance(actor.tenant_id)
    people = svc.access.list_users(Actor.operator(), actor.tenant_id)  # creators, also those who left
    return {
        "tokens": tokens,
        "rows": _token_rows(svc, tokens, policy, now),
        "active": active,
        "limit": limit,
        "at_limit": active >= limit,
        "creators": {u.id: u.email for u in people},
    }


@router.post("/system-settings/api-keys/ask-admin")
def ask_admin(
    request: Request,
    note: Annotated[str, Form(max_length=2000)] = "",
    permission: Annotated[str, Form(max_length=100)] = MANAGE_TOKENS,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    svc = services(request)
    wanted = permission or MANAGE_TOKENS
    # From API Keys one asks to make tokens, or for something a token can carry; never for managing people.
    if wanted != MANAGE_TOKENS and wanted in svc.catalog.session_only:
        raise KbaiError(errors.ASK_NOT_FOR_TOKENS, permission=wanted)
    admin_requests(svc).ask(p.actor, wanted, note or None)
    return see_other(f"{API_KEYS}?done=asked")


@router.post("/system-settings/api-keys/{token_id}/revoke")
def revoke_token(request: Request, token_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    view = services(request).tokens.revoke(p.actor, token_id)
    return see_other(f"{API_KEYS}?{urlencode({'done': 'revoked', 'token': view.id})}")


@router.post("/system-settings/api-keys/{token_id}/pause")
def pause_token(request: Request, token_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    return _set_paused(request, token_id, csrf_token, paused=True)


@router.post("/system-settings/api-keys/{token_id}/resume")
def resume_token(request: Request, token_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    return _set_paused(request, token_id, csrf_token, paused=False)


def _set_paused(request: Request, token_id: int, csrf_token: str, *, paused: bool, service: bool = False) -> Response:
    """Pause or resume from either table (``service``: the tenant's service tokens). A refusal other than "not
    found" (and, for a service token, a missing permission: the 403 page) is shown above its table."""
    p = check_form(request, csrf_token)
    tokens = services(request).tokens
    if service:
        change = tokens.pause_service if paused else tokens.resume_service
    else:
        change = tokens.pause if paused else tokens.resume
    try:
        view = change(p.actor, token_id)
    except KbaiError as err:
        if err.code == "not_found" or (service and err.status == 403):
            raise
        return _api_keys_page(request, p, err, error_at="service" if service else "table")
    done = ("service_paused" if service else "paused") if paused else "resumed"
    anchor = "service-token" if service else "token"
    return see_other(f"{API_KEYS}?{urlencode({'done': done})}#{anchor}-{view.id}")

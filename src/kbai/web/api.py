"""The JSON API under /api/v1. Routes are thin: parse, call the domain with an Actor, render."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from kbai import errors
from kbai.access.catalog import MANAGE_SERVICE_TOKENS
from kbai.access.service import RoleView, UserView, holders_of
from kbai.clock import iso
from kbai.delivery.notifications import NewNotification
from kbai.errors import KbaiError
from kbai.lifecycle.hygiene import hygiene
from kbai.store import audit
from kbai.store.models import Token
from kbai.tokens.service import TokenView
from kbai.web import prefix
from kbai.web import schemas as sc
from kbai.web.auth import (
    SESSION_COOKIE,
    AnyPrincipal,
    Principal,
    SessionPrincipal,
    client_ip,
    manages,
    needs,
    services,
)
from kbai.web.idempotency import REPLAYED_HEADER, idempotent

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": sc.ErrorOut, "description": desc}
    for code, desc in {
        401: "Not authenticated, or the token is invalid (see WWW-Authenticate).",
        403: "Missing permission or scope, or missing X-CSRF-Token.",
        404: "Not found (or not yours).",
        422: "Invalid input; the message says which field and why.",
        429: "Too many failed attempts (see Retry-After).",
    }.items()
}

# Operations that read a JSON body can also answer these two.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": sc.ErrorOut, "description": "The body cannot be parsed (not JSON, or not UTF-8)."},
    413: {"model": sc.ErrorOut, "description": "The body is larger than the server accepts."},
}


def conflict(description: str) -> dict[int | str, dict[str, Any]]:
    return {409: {"model": sc.ErrorOut, "description": description}}


LAST_ADMIN = conflict("It would leave the tenant without an active admin.")


def creates(conflicts: str) -> dict[int | str, dict[str, Any]]:
    """The errors of a creating POST, which also takes an Idempotency-Key (kbai.web.idempotency)."""
    return {
        201: {
            "description": "Created; or, with the Idempotency-Key of an earlier create, that create's answer "
            "again with every secret field null.",
            "headers": {
                REPLAYED_HEADER: {
                    "description": "`true` when this answer is a replay.",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
        },
        400: {
            "model": sc.ErrorOut,
            "description": "The body cannot be parsed, or the Idempotency-Key header "
            "is malformed (invalid_idempotency_key).",
        },
        413: BODY_ERRORS[413],
        **conflict(
            f"{conflicts} Or a request with the same Idempotency-Key is still running "
            "(idempotency_in_progress): retry it."
        ),
        422: {
            "model": sc.ErrorOut,
            "description": "Invalid input; the message says which field and why. Or the "
            "Idempotency-Key was used for another body (idempotency_key_reused).",
        },
    }


router = APIRouter(prefix="/api/v1", responses=ERRORS)

MAX_ID = 2_147_483_647  # ids are 32-bit integers on both databases
TokenId = Annotated[int, Path(ge=1, le=MAX_ID, description="A token id (from GET /api/v1/tokens).")]
RoleId = Annotated[int, Path(ge=1, le=MAX_ID, description="A role id.")]
UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="A user id.")]


def token_json(v: TokenView, now: datetime, rotated_to_id: int | None = None, unspent: int = 0) -> dict[str, Any]:
    """``unspent``: this instance's unspent quota share of the token (kbai.tokens.limits)."""
    quota = None
    if v.quota is not None:
        quota = {**v.quota.json(), "remaining": v.quota.remaining + unspent}
    return {
        "id": v.id,
        "name": v.name,
        "prefix": v.prefix,
        "scopes": v.scopes,
        "created_at": v.created_at,
        "last_used_at": v.last_used_at,
        "expires_at": v.expires_at,
        "status": v.status,
        "rotated_from_id": v.rotated_from_id,
        "rotated_to_id": rotated_to_id,
        "hygiene": hygiene(v, now),
        "description": v.description,
        "allowed_ips": v.allowed_ips,
        "self_rotate": v.self_rotate,
        "paused_at": v.paused_at,
        "service": v.service,
        "created_by": v.created_by_user_id,
        "rate_limit": v.rate_limit.json() if v.rate_limit is not None else None,
        "quota": quota,
    }


def tokens_json(request: Request, views: list[TokenView]) -> list[dict[str, Any]]:
    """Token JSON for ``views`` with their rotation successors (one query) and hygiene flags."""
    svc = services(request)
    now = svc.clock.now()
    successors = svc.tokens.rotated_to(v.id for v in views)
    return [
        token_json(v, now, successors.get(v.id), svc.limits.unspent(v.id) if v.quota is not None else 0) for v in views
    ]


def rotated_json(request: Request, new: TokenView, plaintext: str, old: TokenView) -> dict[str, Any]:
    """A rotation's answer (every rotate route): the new token's JSON, its plaintext once, and the old token."""
    new_json, old_json = tokens_json(request, [new, old])
    return {**new_json, "token": plaintext, "rotated_from": old_json, "old_token_stops_at": old.revoked_at}


def role_json(r: RoleView) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "permissions": r.permissions, "builtin": r.builtin}


def user_json(u: UserView) -> dict[str, Any]:
    return {"id": u.id, "email": u.email, "roles": u.roles, "active": u.active, "external_id": u.external_id}


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) > MAX_ID:
        raise KbaiError(errors.VALIDATION, detail="cursor must be the next_cursor of a previous page.")
    return int(value)


# ---- session --------------------------------------------------------------------------------
@router.post("/session", response_model=sc.LoginOut, tags=["session"], summary="Log in", responses=BODY_ERRORS)
def login(body: sc.LoginIn, request: Request, response: Response) -> dict[str, Any]:
    """Check email and password, set the HttpOnly session cookie, return the CSRF token."""
    svc = services(request)
    try:  # the failure limits are the session service's (reserved before the password is checked)
        cookie, info = svc.sessions.login(body.email, body.password, client_ip(request), body.tenant)
    except KbaiError as err:
        if err.status == 429:
            svc.metrics.rate_limited.labels("login").inc()
        raise
    set_session_cookie(response, cookie, svc.settings.session_ttl_seconds, svc.settings.cookie_secure)
    return session_json(svc, info)


def session_json(svc: Any, info: Any) -> dict[str, Any]:
    """The answer of a login or a tenant switch: the CSRF token, who, where, and the other tenants."""
    return {
        "csrf_token": info.csrf_token,
        "user": {"id": info.person_id, "email": info.email},
        "tenant": {"id": info.tenant_id, "name": info.tenant_name, "external_id": info.tenant_external_id},
        "tenants": tenants_of(svc, info.person_id),
    }


def tenants_of(svc: Any, person_id: int) -> list[dict[str, Any]]:
    return [
        {"id": m.tenant_id, "name": m.tenant_name, "external_id": m.tenant_external_id}
        for m in svc.access.memberships(person_id)
        if m.active
    ]


@router.get("/session/tenants", response_model=sc.SessionTenantsOut, tags=["session"], summary="Your tenants")
def session_tenants(p: SessionPrincipal, request: Request) -> dict[str, Any]:
    """Every tenant you are an active member of (a session, never a token: a token acts in one tenant only and
    never learns your others)."""
    assert p.actor.person_id is not None
    return {
        "tenants": tenants_of(services(request), p.actor.person_id),
        "current": p.actor.tenant_id,
        "next_cursor": None,
    }


@router.post(
    "/session/tenant",
    response_model=sc.LoginOut,
    tags=["session"],
    summary="Switch tenant",
    responses={
        **BODY_ERRORS,
        404: {
            "model": sc.ErrorOut,
            "description": "You are not an active member of that tenant (the same answer whether it exists or not).",
        },
    },
)
def switch_tenant(
    body: sc.SessionTenantIn, p: SessionPrincipal, request: Request, response: Response
) -> dict[str, Any]:
    """Move your session to another of your tenants: a new session cookie and a new CSRF token (the old session
    ends). Tokens are not affected: each acts only in the tenant it was created in."""
    svc = services(request)
    assert p.session is not None
    cookie, info = svc.sessions.switch(
        p.session, request.cookies.get(SESSION_COOKIE) or "", body.tenant, client_ip(request)
    )
    set_session_cookie(response, cookie, svc.settings.session_ttl_seconds, svc.settings.cookie_secure)
    return session_json(svc, info)


def set_session_cookie(response: Response, cookie: str, ttl: int, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=ttl, httponly=True, samesite="lax", secure=secure, path=prefix.cookie_path()
    )


@router.delete("/session", status_code=204, tags=["session"], summary="Log out")
def logout(p: SessionPrincipal, request: Request) -> Response:
    svc = services(request)
    assert p.session is not None
    svc.sessions.logout(p.session, client_ip(request))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path=prefix.cookie_path())
    return response


# ---- tokens ---------------------------------------------------------------------------------
@router.get("/tokens", response_model=sc.TokenListOut, tags=["tokens"], summary="List your tokens")
def list_tokens(
    p: SessionPrincipal,
    request: Request,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> dict[str, Any]:
    """Every token you created, all statuses, newest first. Needs a session."""
    assert p.actor.user_id is not None
    views = services(request).tokens.list(p.actor.user_id, before_id=_cursor(cursor), limit=limit + 1)
    more = len(views) > limit
    views = views[:limit]
    return {"tokens": tokens_json(request, views), "next_cursor": str(views[-1].id) if more else None}


@router.post(
    "/tokens",
    status_code=201,
    response_model=sc.TokenCreatedOut,
    tags=["tokens"],
    summary="Create a token",
    responses=creates("Limit reached or name taken."),
)
@idempotent
def create_token(body: sc.TokenCreateIn, p: SessionPrincipal, request: Request) -> dict[str, Any]:
    """Mint a token. The response is the only time the full token is shown."""
    view, plaintext = services(request).tokens.create(
        p.actor,
        body.name,
        body.scopes,
        expires_in_days=body.expires_in_days,
        expires_at=body.expires_at,
        description=body.description,
        allowed_ips=body.allowed_ips,
        self_rotate=bool(body.self_rotate),
        rate_limit=body.rate_limit.model_dump() if body.rate_limit else None,
        quota=body.quota.model_dump() if body.quota else None,
    )
    return {**tokens_json(request, [view])[0], "token": plaintext}


@router.get("/tokens/{token_id}", response_model=sc.TokenOut, tags=["tokens"], summary="One of your tokens")
def get_token(token_id: TokenId, p: AnyPrincipal, request: Request) -> dict[str, Any]:
    """With a session: any of your tokens. With a token: only itself."""
    return tokens_json(request, [services(request).tokens.get(p.actor, token_id)])[0]


@router.post("/tokens/{token_id}/revoke", response_model=sc.TokenOut, tags=["tokens"], summary="Revoke a token")
def revoke_token(token_id: TokenId, p: AnyPrincipal, request: Request) -> dict[str, Any]:
    """Your session may revoke any of your tokens; a token may revoke itself. Idempotent."""
    return tokens_json(request, [services(request).tokens.revoke(p.actor, token_id)])[0]


# Before /tokens/{token_id}/...: "self" is not an id.
@router.post(
    "/tokens/self/rotate",
    status_code=201,
    response_model=sc.RotatedOut,
    tags=["tokens"],
    summary="Rotate the calling token (self-rotation)",
    responses=creates(
        "This token was already rotated (already_rotated: its successor is the one to rotate), or is not active."
    ),
)
@idempotent
def self_rotate_token(p: AnyPrincipal, request: Request, body: sc.SelfRotateIn | None = None) -> dict[str, Any]:
    """Authenticate with the token itself (Authorization: Bearer). Only a token created with ``self_rotate``
    may (403 ``self_rotate_not_enabled`` otherwise; 403 ``token_required`` with a session): the only way a
    token touches token management. The new token has the same name, scopes and restrictions; its lifetime is
    the old one's, cut to the tenant policy's longest. The old token stops after ``grace_period_seconds``
    (default 0); used again after that, it is refused, logged, and its owner is told (once)."""
    grace = body.grace_period_seconds if body else 0
    new, plaintext, old = services(request).tokens.rotate_self(p.actor, grace)
    return rotated_json(request, new, plaintext, old)


@router.patch(
    "/tokens/{token_id}",
    response_model=sc.TokenOut,
    tags=["tokens"],
    summary="Change a token",
    responses={
        **BODY_ERRORS,
        **conflict("Only an active or paused token can change (not_editable); or the new name is taken."),
    },
)
def update_token(token_id: TokenId, body: sc.TokenPatchIn, p: SessionPrincipal, request: Request) -> dict[str, Any]:
    """Change the name, description, IP allowlist, rate limit or quota (sent: set anew), bring the expiry
    forward, or drop scopes (they can only shrink: 422 ``scopes_only_shrink``; a later expiry is 422
    ``expiry_only_shorter``). Only the fields sent change. Your session only; every instance applies it from the next request."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    for name in ("rate_limit", "quota"):
        if changes.get(name) is not None:
            changes[name] = changes[name].model_dump()
    return tokens_json(request, [services(request).tokens.update(p.actor, token_id, changes)])[0]


@router.post(
    "/tokens/{token_id}/pause",
    response_model=sc.TokenOut,
    tags=["tokens"],
    summary="Pause a token",
    responses=conflict("Only an active token can be paused (not_pausable)."),
)
def pause_token(token_id: TokenId, p: AnyPrincipal, request: Request) -> dict[str, Any]:
    """Refuse the token (401 invalid_token) on every instance from the next request until it is resumed. Your
    session may pause your tokens, a token itself, and a reviewer of the tenant's tokens
    (developer.review_tokens) any token of the tenant. Idempotent."""
    return tokens_json(request, [services(request).tokens.pause(p.actor, token_id)])[0]


@router.post(
    "/tokens/{token_id}/resume",
    response_model=sc.TokenOut,
    tags=["tokens"],
    summary="Resume a token",
    responses=conflict("A revoked or expired token cannot be resumed (not_resumable)."),
)
def resume_token(token_id: TokenId, p: AnyPrincipal, request: Request) -> dict[str, Any]:
    """The paused token works again from the next request. Needs a session: yours for your tokens, or one
    holding developer.review_tokens for any token of the tenant. Revoked stays final. Idempotent."""
    return tokens_json(request, [services(request).tokens.resume(p.actor, token_id)])[0]


@router.post(
    "/tokens/{token_id}/rotate",
    status_code=201,
    response_model=sc.RotatedOut,
    tags=["tokens"],
    summary="Rotate a token",
    responses=creates(
        "Only an active token can be rotated (not_rotatable), and only once (already_rotated: "
        "the message names the successor's id)."
    ),
)
@idempotent
def rotate_token(
    token_id: TokenId, p: SessionPrincipal, request: Request, body: sc.RotateIn | None = None
) -> dict[str, Any]:
    """A new token with the same name, scopes and lifetime (or ``expires_in_days``); the old one stops after
    ``grace_period_seconds`` (default 0: at once). While in its grace period the old token does not count
    toward the active-token limit. The tenant's policy applies to the new token (422 naming the rule)."""
    grace = body.grace_period_seconds if body else 0
    days = body.expires_in_days if body else None
    new, plaintext, old = services(request).tokens.rotate(p.actor, token_id, grace, expires_in_days=days)
    return rotated_json(request, new, plaintext, old)


# ---- service tokens (owned by the tenant) ---------------------------------------------------
@router.get(
    "/service-tokens", response_model=sc.ServiceTokenListOut, tags=["service tokens"], summary="List service tokens"
)
def list_service_tokens(
    p: SessionPrincipal,
    request: Request,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> dict[str, Any]:
    """The tenant's service tokens, all statuses, newest first. A session holding
    developer.manage_service_tokens."""
    svc = services(request)
    views = svc.tokens.list_service(p.actor, before_id=_cursor(cursor), limit=limit + 1)
    more = len(views) > limit
    views = views[:limit]
    assert p.actor.tenant_id is not None
    active, most = svc.tokens.service_allowance(p.actor.tenant_id)
    return {
        "tokens": tokens_json(request, views),
        "next_cursor": str(views[-1].id) if more else None,
        "active": active,
        "limit": most,
    }


@router.post(
    "/service-tokens",
    status_code=201,
    response_model=sc.TokenCreatedOut,
    tags=["service tokens"],
    summary="Create a service token",
    responses=creates("The tenant's service-token limit is reached, or the name is taken."),
)
@idempotent
def create_service_token(body: sc.ServiceTokenCreateIn, p: SessionPrincipal, request: Request) -> dict[str, Any]:
    """Mint a token owned by the tenant, not by you: it keeps working when you leave. Its scopes must be
    permissions you hold now; afterwards the tenant's ceiling bounds them. The response is the only time the
    full token is shown. A session holding developer.manage_service_tokens."""
    view, plaintext = services(request).tokens.create_service(
        p.actor,
        body.name,
        body.scopes,
        expires_in_days=body.expires_in_days,
        expires_at=body.expires_at,
        description=body.description,
        allowed_ips=body.allowed_ips,
        rate_limit=body.rate_limit.model_dump() if body.rate_limit else None,
        quota=body.quota.model_dump() if body.quota else None,
    )
    return {**tokens_json(request, [view])[0], "token": plaintext}


@router.get(
    "/service-tokens/ceiling",
    response_model=sc.CeilingOut,
    tags=["service tokens"],
    summary="Get the service-token ceiling",
)
def get_service_token_ceiling(p: SessionPrincipal, request: Request) -> dict[str, Any]:
    """The most the tenant's service tokens may act with (null: the default, each token's own scopes). A
    session holding developer.manage_service_tokens."""
    if MANAGE_SERVICE_TOKENS not in p.actor.permissions:
        raise KbaiError(errors.NO_SERVICE_TOKEN_PERMISSION, action="see the service-token ceiling")
    assert p.actor.tenant_id is not None
    found = services(request).tokens.ceiling(p.actor.tenant_id)
    return {"permissions": found, "default": found is None}


@router.put(
    "/service-tokens/ceiling",
    response_model=sc.CeilingOut,
    tags=["service tokens"],
    summary="Set the service-token ceiling",
    responses=BODY_ERRORS,
)
def set_service_token_ceiling(body: sc.CeilingIn, p: SessionPrincipal, request: Request) -> dict[str, Any]:
    """Bound every service token of the tenant (on every instance from the next request): effective scopes =
    the token's scopes ∩ this list; null restores the default. A session holding both
    developer.manage_service_tokens and roles.manage, and every permission it lists (403 otherwise)."""
    found = services(request).tokens.set_ceiling(p.actor, body.permissions)
    return {"permissions": found, "default": found is None}


@router.post(
    "/service-tokens/{token_id}/revoke",
    response_model=sc.TokenOut,
    tags=["service tokens"],
    summary="Revoke a service token",
)
def revoke_service_token(token_id: TokenId, p: SessionPrincipal, request: Request) -> dict[str, Any]:
    """Revoke a service token of your tenant now (404 for any other). Idempotent. A session holding
    developer.manage_service_tokens."""
    return tokens_json(request, [services(request).tokens.revoke_service(p.actor, token_id)])[0]


@router.post(
    "/service-tokens/{token_id}/rotate",
    status_code=201,
    response_model=sc.RotatedOut,
    tags=["service tokens"],
    summary="Rotate a service token",
    responses=creates(
        "Only an active service token can be rotated (not_rotatable), and only once (already_rotated: "
        "the message names the successor's id)."
    ),
)
@idempotent
def rotate_service_token(
    token_id: TokenId, p: SessionPrincipal, request: Request, body: sc.RotateIn | None = None
) -> dict[str, Any]:
    """As `POST /api/v1/tokens/{id}/rotate`, for a service token of your tenant: the new token is the
    tenant's too (same name, scopes, restrictions and quota; you are recorded as its creator), and the old
    one stops after ``grace_period_seconds`` (default 0). A session holding developer.manage_service_tokens."""
    grace = body.grace_period_seconds if body else 0
    days = body.expires_in_days if body else None
    new, plaintext, old = services(request).tokens.rotate_service(p.actor, token_id, grace, expires_in_days=days)
    return rotated_json(request, new, plaintext, old)


# ---- identity and catalog -------------------------------------------------------------------
@router.get("/me", response_model=sc.MeOut, response_model_exclude_unset=True, tags=["identity"], summary="Who am I")
async def me(p: AnyPrincipal, request: Request) -> Response:
    # A token's hot route: the body is built here in MeOut's field order and sent as is, so FastAPI's
    # response-model validation and serialization (MeOut documents it in /openapi.json) is skipped.
    svc = services(request)
    a = p.actor
    record = p.verification.record if p.verification else None
    tenant_name = p.session.tenant_name if p.session else (record.tenant_name if record else "")
    tenant_external_id = p.session.tenant_external_id if p.session else (record.tenant_external_id if record else None)
    order = [perm.key for perm in svc.catalog.permissions if perm.key in a.permissions]
    service = record is not None and record.service
    out: dict[str, Any] = {
        "user": None if service else {"id": a.person_id, "email": a.email},  # a service token has no person
        "tenant": {"id": a.tenant_id, "name": tenant_name, "external_id": tenant_external_id},
        "scopes": order,
    }
    if a.token_id is not None:
        out["token_id"] = a.token_id
    out["auth"] = p.via
    return JSONResponse(out)


@router.get("/permissions", response_model=sc.CatalogOut, tags=["identity"], summary="The permission catalog")
async def permissions(_: AnyPrincipal, request: Request) -> dict[str, Any]:
    return {
        "groups": [
            {"name": g, "permissions": [{"key": p.key, "label": p.label, "session_only": p.session_only} for p in ps]}
            for g, ps in services(request).catalog.groups()
        ]
    }


# ---- roles ----------------------------------------------------------------------------------
RolesRead = Annotated[Principal, Depends(needs("roles.read", "view roles"))]
# Changes to roles and users need a session: a token's scopes can read them, never change them.
RolesManage = Annotated[Principal, Depends(manages("roles.manage", "change roles"))]
UsersRead = Annotated[Principal, Depends(needs("users.read", "view users"))]
UsersManage = Annotated[Principal, Depends(manages("users.manage", "manage users"))]


@router.get("/roles", response_model=sc.RoleListOut, tags=["roles"], summary="Roles of your tenant")
def list_roles(p: RolesRead, request: Request) -> dict[str, Any]:
    assert p.actor.tenant_id is not None
    roles = services(request).access.list_roles(p.actor, p.actor.tenant_id)
    return {"roles": [role_json(r) for r in roles], "next_cursor": None}


@router.post(
    "/roles",
    status_code=201,
    response_model=sc.RoleOut,
    tags=["roles"],
    summary="Create a role",
    responses=creates("A role with that name exists."),
)
@idempotent
def create_role(body: sc.RoleCreateIn, p: RolesManage, request: Request) -> dict[str, Any]:
    """Needs a session, and only permissions you hold yourself."""
    assert p.actor.tenant_id is not None
    return role_json(services(request).access.create_role(p.actor, p.actor.tenant_id, body.name, body.permissions))


@router.get("/roles/{role_id}", response_model=sc.RoleOut, tags=["roles"], summary="One role")
def get_role(role_id: RoleId, p: RolesRead, request: Request) -> dict[str, Any]:
    return role_json(services(request).access.get_role(p.actor, role_id))


@router.put(
    "/roles/{role_id}",
    response_model=sc.RoleOut,
    tags=["roles"],
    summary="Change a role",
    responses={**BODY_ERRORS, **conflict("A role with that name exists.")},
)
def update_role(role_id: RoleId, body: sc.RoleUpdateIn, p: RolesManage, request: Request) -> dict[str, Any]:
    """Replace the role's permissions (and optionally rename it). Applies to every token of every holder at once.
    Needs a session; you can add or remove only permissions you hold, and not take any from a holder who holds
    something you don't."""
    return role_json(services(request).access.update_role(p.actor, role_id, body.permissions, body.name))


# ---- users ----------------------------------------------------------------------------------
@router.get("/users", response_model=sc.UserListOut, tags=["users"], summary="Users of your tenant")
def list_users(p: UsersRead, request: Request) -> dict[str, Any]:
    assert p.actor.tenant_id is not None
    users = services(request).access.list_users(p.actor, p.actor.tenant_id)
    return {"users": [user_json(u) for u in users], "next_cursor": None}


@router.post(
    "/users",
    status_code=201,
    response_model=sc.UserCreatedOut,
    response_model_exclude_none=True,
    tags=["users"],
    summary="Create a user",
    responses=creates("A user with that email exists."),
)
@idempotent
def create_user(body: sc.UserCreateIn, p: UsersManage, request: Request) -> dict[str, Any]:
    """Adds the person with that email to your tenant (creating the person when there is none) and answers a
    one-time `invitation_url` (72 hours, emailed too when SMTP is set). Never a password, and the same answer
    whether the person existed or not. Needs a session (never a token), and you can give only roles whose
    permissions you hold yourself."""
    assert p.actor.tenant_id is not None
    svc = services(request)
    view, url, expires_at = invite_member(svc, request, p.actor, body.email, body.roles, body.external_id)
    return {**user_json(view), "invitation_url": url, "invitation_expires_at": expires_at}


def invite_member(
    svc: Any, request: Request, actor: Any, email: str, roles: Any, external_id: str | None = None
) -> tuple[UserView, str, str | None]:
    """Add a member and make their invitation (and its email): (membership, absolute link, expiry ISO 8601).

    The link is on KBAI_PUBLIC_URL when it is set (the address people reach kbai at, prefix included),
    otherwise on the address this request came to."""
    base = (svc.settings.public_url or str(request.base_url)).rstrip("/")
    invited = svc.access.invite(actor, actor.tenant_id, email, roles, external_id=external_id, link_base=base)
    return invited.view, base + invited.path, iso(invited.expires_at)


@router.put(
    "/users/{user_id}/roles",
    response_model=sc.UserOut,
    tags=["users"],
    summary="Set a user's roles",
    responses={**BODY_ERRORS, **LAST_ADMIN},
)
def set_user_roles(user_id: UserId, body: sc.UserRolesIn, p: UsersManage, request: Request) -> dict[str, Any]:
    """Needs a session. You can give only roles whose permissions you hold, and only to someone who holds
    nothing you don't (403 ``permission_not_held`` otherwise)."""
    return user_json(services(request).access.set_user_roles(p.actor, user_id, body.roles))


@router.post(
    "/users/{user_id}/deactivate",
    response_model=sc.UserOut,
    tags=["users"],
    summary="Deactivate a user",
    responses={
        **BODY_ERRORS,
        **conflict("It would leave the tenant without an active admin, or a hand-over was refused."),
    },
)
def deactivate_user(
    user_id: UserId, p: UsersManage, request: Request, body: sc.DeactivateIn | None = None
) -> dict[str, Any]:
    """The user's sessions end and their tokens stop working at once. Needs a session, and the user may hold
    nothing you don't (so only an admin deactivates an admin).

    ``hand_over``: ids of the user's active tokens to keep as service tokens of the tenant instead (the
    plaintext keeps working; scopes cut to the service-token ceiling, by default the Member role's
    permissions; audited). Refused with 409, nothing changed, when one is not the user's active token or
    the tenant's service-token limit would be passed. GET /api/v1/users/{id}/tokens lists the candidates."""
    return user_json(deactivate_member(services(request), p.actor, user_id, body.hand_over if body else []))


def deactivate_member(svc: Any, actor: audit.Actor, user_id: int, keep: list[int]) -> UserView:
    """Deactivate a membership, keeping the tokens ``keep`` (ids) as service tokens of the tenant in the same
    transaction; every instance hears of the changed tokens after the commit. The API and the Users page both
    deactivate through here."""
    ids = list(dict.fromkeys(keep))
    changed: set[str] = set()
    told: list[Any] = []

    def hand_over(s: Any, user: Any) -> None:
        changed.update(svc.tokens.hand_over_in(s, actor, user, ids))
        told.extend(svc.notifications.add(s, _hand_over_notices(svc, s, actor, user, ids), svc.clock.now()))

    view: UserView = svc.access.deactivate_user(actor, user_id, within=hand_over if ids else None)
    svc.tokens.notify(changed)
    svc.notifications.deliver(told)
    return view


TOKEN_HANDED_OVER = "token.handed_over"


def _hand_over_notices(svc: Any, s: Any, actor: audit.Actor, user: Any, ids: list[int]) -> list[NewNotification]:
    """Everyone else who manages the tenant's service tokens is told which tokens just became theirs to look
    after (in-app, and by email when SMTP is set), in the deactivation's transaction."""
    tokens = list(s.scalars(select(Token).where(Token.id.in_(ids)).order_by(Token.id))) if ids else []
    if not tokens:
        return []
    listed = "; ".join(f"{t.prefix} ({t.name[:60]})" for t in tokens)
    title = f"{len(tokens)} token(s) of {user.email} are now service tokens of the tenant"[:200]
    body = (
        f"{actor.label} deactivated {user.email} and kept these tokens working as service tokens: {listed}. "
        "Their plaintext did not change, so the integrations using them keep working; their scopes are cut to "
        "the tenant's ceiling. Review them under System Settings → API Keys (Service tokens)."
    )
    details = {"user_id": user.id, "token_ids": [t.id for t in tokens], "prefixes": [t.prefix for t in tokens]}
    return [
        NewNotification(
            user_id=uid,
            tenant_id=user.tenant_id,
            email=email,
            kind=TOKEN_HANDED_OVER,
            title=title,
            body=body,
            details=details,
        )
        for uid, email in holders_of(s, user.tenant_id, MANAGE_SERVICE_TOKENS, svc.catalog)
        if uid != actor.user_id
    ]


@router.get(
    "/users/{user_id}/tokens",
    response_model=sc.UserTokensOut,
    tags=["users"],
    summary="List a user's working tokens",
)
def list_user_tokens(user_id: UserId, p: UsersManage, request: Request) -> dict[str, Any]:
    """The user's active and paused tokens with their last use: what a deactivation may hand over to the
    tenant (``hand_over``). Needs a session holding users.manage in the user's tenant."""
    svc = services(request)
    svc.access.get_user(p.actor, user_id)  # 404 outside the tenant
    return {
        "tokens": [
            {
                "id": v.id,
                "name": v.name,
                "prefix": v.prefix,
                "scopes": v.scopes,
                "status": v.status,
                "last_used_at": v.last_used_at,
                "expires_at": v.expires_at,
            }
            for v in svc.tokens.active_of(user_id)
        ]
    }


@router.post("/users/{user_id}/reactivate", response_model=sc.UserOut, tags=["users"], summary="Reactivate a user")
def reactivate_user(user_id: UserId, p: UsersManage, request: Request) -> dict[str, Any]:
    """The user may log in again, and their tokens that were not revoked and have not expired work again;
    revoked tokens stay revoked. Needs a session, and the user may hold nothing you don't."""
    return user_json(services(request).access.reactivate_user(p.actor, user_id))


# ---- audit ----------------------------------------------------------------------------------
AuditReader = Annotated[Principal, Depends(needs("audit.read", "read the audit log"))]


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise KbaiError(
            errors.VALIDATION, detail=f"{name} must be an ISO 8601 time, e.g. 2027-01-31T00:00:00Z."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 has no UTC time; binding it would be a 500
        raise KbaiError(errors.VALIDATION, detail=f"{name} is out of range.") from None


def _audit_filter(
    action: Annotated[
        str | None, Query(max_length=50, description="e.g. token.create, token.revoke, role.update")
    ] = None,
    actor_user_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only what this user did.")] = None,
    target_type: Annotated[str | None, Query(max_length=30, description="token, user, role, tenant ...")] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str | None, Query(max_length=40, description="ISO 8601, inclusive.")] = None,
    until: Annotated[str | None, Query(max_length=40, description="ISO 8601, exclusive.")] = None,
) -> audit.AuditFilter:
    return audit.AuditFilter(
        action=action,
        actor_user_id=actor_user_id,
        target_type=target_type,
        target_id=target_id,
        since=_when(since, "since"),
        until=_when(until, "until"),
    )


def _event_json(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "target_type": e.target_type,
        "target_id": e.target_id,
        "ip": e.ip,
        "details": e.details,
    }


@router.get("/audit", response_model=sc.AuditListOut, tags=["audit"], summary="The audit log, newest first")
def audit_log(
    p: AuditReader,
    request: Request,
    where: Annotated[audit.AuditFilter, Depends(_audit_filter)],
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    svc = services(request)
    with svc.db.read() as s:
        rows = audit.events(s, p.actor.tenant_id, before_id=_cursor(cursor), limit=limit + 1, where=where)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"events": [_event_json(e) for e in rows], "next_cursor": str(rows[-1].id) if more else None}


@router.get(
    "/audit/export",
    tags=["audit"],
    summary="Export the audit log (CSV or JSON)",
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/AuditListOut"}},
            },
            "description": "Every matching event, newest first, as a download.",
        }
    },
)
def audit_export(
    p: AuditReader,
    request: Request,
    where: Annotated[audit.AuditFilter, Depends(_audit_filter)],
    format: Annotated[Literal["csv", "json"], Query(description="csv or json")] = "csv",  # noqa: A002
) -> Response:
    svc = services(request)
    with svc.db.read() as s:
        rows = audit.events(s, p.actor.tenant_id, limit=None, where=where)
    stamp = svc.clock.now().strftime("%Y%m%dT%H%M%SZ")
    if format == "json":
        body = json.dumps(
            {"events": [{**_event_json(e), "at": iso(e.at)} for e in rows], "next_cursor": None}, ensure_ascii=False
        )
        return Response(
            body,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="kbai-audit-{stamp}.json"'},
        )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at", "actor", "action", "target_type", "target_id", "ip", "details"])
    for e in rows:
        writer.writerow(
            csv_row(
                [
                    e.id,
                    iso(e.at),
                    e.actor,
                    e.action,
                    e.target_type,
                    e.target_id,
                    e.ip,
                    json.dumps(e.details, ensure_ascii=False, sort_keys=True),
                ]
            )
        )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="kbai-audit-{stamp}.csv"'},
    )


def _csv_safe(value: str) -> str:
    """Defuse spreadsheet formula injection: a cell may not start with = + - @ tab or CR (OWASP)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_row(values: list[Any]) -> list[str]:
    """One CSV row with every cell through the formula guard (None is an empty cell).

    Every cell, not only the ones that look user-made: an IP column, an id or an action name is
    text someone else may have chosen too (a proxy's header, an operator's permission key).
    """
    return [_csv_safe("" if v is None else str(v)) for v in values]

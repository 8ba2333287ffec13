"""Token lifecycle over HTTP: activity, the tenant's token inventory, and tenant policies.

Thin routes over :mod:`kbai.lifecycle.activity`, :mod:`kbai.lifecycle.inventory` and
:mod:`kbai.tokens.policy`; the rules (who may see what, what a policy forbids) live there.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from kbai.access.catalog import REVIEW_TOKENS
from kbai.clock import iso
from kbai.lifecycle.activity import Activity, heatmap_svg
from kbai.lifecycle.hygiene import hygiene
from kbai.lifecycle.inventory import InventoryFilter, InventoryRow
from kbai.tokens.policy import UNSET, Policy
from kbai.web import schemas as sc
from kbai.web.api import BODY_ERRORS, ERRORS, TokenId, _cursor, conflict, csv_row, tokens_json
from kbai.web.auth import AnyPrincipal, Principal, needs, services

router = APIRouter(prefix="/api/v1", responses=ERRORS)


# ---- schemas (also the OpenAPI document) -------------------------------------------------------
class HourCountOut(BaseModel):
    hour: datetime = Field(description="Start of the UTC hour.")
    requests: int


class CellOut(BaseModel):
    weekday: int = Field(description="0 = Monday ... 6 = Sunday (UTC).")
    hour: int = Field(description="0-23 (UTC).")


class ActivityOut(BaseModel):
    token_id: int
    since: datetime = Field(description="Start of the 30-day window (inclusive).")
    until: datetime = Field(description="End of the window (exclusive): the end of the current hour.")
    total: int = Field(description="Requests in the window.")
    hourly: list[HourCountOut] = Field(description="Hours with at least one request, oldest first.")
    grid: list[list[int]] = Field(description="Hour-of-week heatmap: grid[weekday][hour], 7 x 24, Monday first, UTC.")
    last_used_at: datetime | None
    last_used_ip: str | None = Field(description="Client address of the last use, when known.")
    last_used_user_agent: str | None = Field(description="User-Agent of the last use, when sent.")
    usual_hours_known: bool = Field(
        description="False during the token's first 14 days, or when it was not used in them."
    )
    outside_usual_hours: bool = Field(
        description="Used, after its first 14 days, in an hour of the week in which it was never used during them."
    )
    unusual_hours: list[CellOut] = Field(description="The hour-of-week cells that set outside_usual_hours.")
    refused: int = Field(
        default=0,
        description="Requests refused because they came from outside the token's IP "
        "allowlist (counted in batches, like last used).",
    )
    last_refused_at: datetime | None = Field(default=None, description="The latest such refusal.")
    last_refused_ip: str | None = Field(default=None, description="The client address of the latest refusal.")


class OwnerOut(BaseModel):
    id: int
    email: str


class InventoryTokenOut(sc.TokenOut):
    owner: OwnerOut | None = Field(
        description="The person who owns it; null for a service token (owned by the tenant)."
    )


class InventoryListOut(BaseModel):
    tokens: list[InventoryTokenOut]
    next_cursor: str | None


class PolicyOut(BaseModel):
    max_lifetime_days: int | None = Field(description="Longest lifetime a new token may have; null: no limit.")
    expiration_required: bool = Field(description="Every new token must expire (implied by max_lifetime_days).")
    auto_revoke_unused_days: int | None = Field(
        description="Active tokens unused (or never used) for this many days are revoked by `kbai worker`."
    )
    webhook_configured: bool
    webhook_url: str | None = Field(description="Shown to holders of roles.manage only.")
    require_allowlist: bool = Field(
        default=False, description="Every new token must carry an IP allowlist (allowed_ips)."
    )
    updated_at: datetime | None


class PolicyUpdatedOut(PolicyOut):
    webhook_secret: str | None = Field(
        default=None,
        description="The webhook signing secret (whsec_ + base64, Standard Webhooks), only when it was "
        "just generated. Shown once.",
    )


class PolicyIn(sc.Strict):
    """Only the fields you send change; null removes a rule."""

    max_lifetime_days: int | None = Field(default=None, strict=True, examples=[90], description="1-3650 or null.")
    expiration_required: bool | None = Field(default=None, strict=True)
    auto_revoke_unused_days: int | None = Field(default=None, strict=True, examples=[90], description="1-3650 or null.")
    require_allowlist: bool | None = Field(
        default=None, strict=True, description="Every new token must carry an IP allowlist."
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=4000,
        examples=["https://hooks.example.com/kbai"],
        description="http(s) URL of a public address receiving signed events (Standard Webhooks); null removes it.",
    )
    new_webhook_secret: bool = Field(
        default=False, strict=True, description="Generate a new signing secret (returned once)."
    )


# ---- activity ----------------------------------------------------------------------------------
def activity_json(a: Activity) -> dict[str, Any]:
    return {
        "token_id": a.token_id,
        "since": a.since,
        "until": a.until,
        "total": a.total,
        "hourly": [{"hour": h.hour, "requests": h.requests} for h in a.hourly],
        "grid": a.grid,
        "last_used_at": a.last_used_at,
        "last_used_ip": a.last_used_ip,
        "last_used_user_agent": a.last_used_user_agent,
        "usual_hours_known": a.usual_hours_known,
        "outside_usual_hours": a.outside_usual_hours,
        "unusual_hours": [{"weekday": d, "hour": h} for d, h in a.unusual_hours],
        "refused": a.refused,
        "last_refused_at": a.last_refused_at,
        "last_refused_ip": a.last_refused_ip,
    }


@router.get(
    "/tokens/{token_id}/activity",
    response_model=ActivityOut,
    tags=["tokens"],
    summary="Requests per hour over the last 30 days",
)
def token_activity(token_id: TokenId, p: AnyPrincipal, request: Request) -> dict[str, Any]:
    """Your own token (with a session), or any token of your tenant with developer.review_tokens."""
    return activity_json(services(request).activity.for_token(p.actor, token_id))


@router.get(
    "/tokens/{token_id}/activity/heatmap.svg",
    tags=["tokens"],
    summary="The activity heatmap as SVG",
    responses={
        200: {
            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
            "description": "A 7 x 24 hour-of-week heatmap (UTC).",
        }
    },
)
def token_activity_svg(token_id: TokenId, p: AnyPrincipal, request: Request) -> Response:
    activity = services(request).activity.for_token(p.actor, token_id)
    return Response(
        heatmap_svg(activity.grid), media_type="image/svg+xml", headers={"Cache-Control": "private, no-store"}
    )


# ---- the tenant's token inventory --------------------------------------------------------------
Reviewer = Annotated[Principal, Depends(needs(REVIEW_TOKENS, "review the tenant's tokens"))]


def _inventory_filter(
    owner: Annotated[str | None, Query(max_length=320, description="Owner email or user id.")] = None,
    status: Annotated[Literal["active", "paused", "expired", "revoked"] | None, Query()] = None,
    stale: Annotated[bool, Query(description="Active and unused (or never used) for 90+ days.")] = False,
    expiring_soon: Annotated[bool, Query(description="Active and expiring within 7 days.")] = False,
) -> InventoryFilter:
    return InventoryFilter(owner=owner, status=status, stale=stale, expiring_soon=expiring_soon)


def inventory_json(request: Request, rows: list[InventoryRow]) -> list[dict[str, Any]]:
    out = tokens_json(request, [r.view for r in rows])
    return [
        {**t, "owner": {"id": r.view.user_id, "email": r.owner_email} if r.view.user_id is not None else None}
        for t, r in zip(out, rows, strict=True)
    ]


@router.get("/admin/tokens", response_model=InventoryListOut, tags=["admin"], summary="Every token of your tenant")
def admin_tokens(
    p: Reviewer,
    request: Request,
    where: Annotated[InventoryFilter, Depends(_inventory_filter)],
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> dict[str, Any]:
    """Needs developer.review_tokens. Newest first; filters combine."""
    rows = services(request).inventory.list(p.actor, where, before_id=_cursor(cursor), limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"tokens": inventory_json(request, rows), "next_cursor": str(rows[-1].view.id) if more else None}


CSV_COLUMNS = [
    "id",
    "owner",
    "name",
    "prefix",
    "scopes",
    "status",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
    "rotated_from_id",
    "hygiene",
    "description",
    "allowed_ips",
    "paused_at",
    "service",
    "rate_limit",
    "quota_remaining",
]


@router.get(
    "/admin/tokens/export",
    tags=["admin"],
    summary="Export your tenant's tokens as CSV",
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "Every matching token, newest first, as a download. Never a secret.",
        }
    },
)
def admin_tokens_export(
    p: Reviewer, request: Request, where: Annotated[InventoryFilter, Depends(_inventory_filter)]
) -> Response:
    svc = services(request)
    rows = svc.inventory.list(p.actor, where, limit=None)
    now = svc.clock.now()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        v = r.view
        writer.writerow(
            csv_row(
                [
                    v.id,
                    r.owner_email,
                    v.name,
                    v.prefix,
                    " ".join(v.scopes),
                    v.status,
                    iso(v.created_at),
                    iso(v.last_used_at),
                    iso(v.expires_at),
                    iso(v.revoked_at),
                    v.rotated_from_id,
                    " ".join(hygiene(v, now)),
                    v.description,
                    " ".join(v.allowed_ips or []),
                    iso(v.paused_at),
                    "true" if v.service else "false",
                    v.rate_limit.text() if v.rate_limit else "",
                    v.quota.remaining + svc.limits.unspent(v.id) if v.quota else "",
                ]
            )
        )
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="kbai-tokens-{stamp}.csv"'},
    )


@router.post(
    "/admin/tokens/{token_id}/revoke",
    response_model=InventoryTokenOut,
    tags=["admin"],
    summary="Revoke any token of your tenant",
)
def admin_revoke(token_id: TokenId, p: Reviewer, request: Request) -> dict[str, Any]:
    """Needs developer.review_tokens. The owner is notified in-app and by email. Idempotent."""
    svc = services(request)
    svc.inventory.revoke(p.actor, token_id)
    return inventory_json(request, [svc.inventory.get(p.actor, token_id)])[0]


# ---- tenant policies ---------------------------------------------------------------------------
RolesManage = Annotated[Principal, Depends(needs("roles.manage", "change the token policy"))]


def policy_json(policy: Policy, p: Principal) -> dict[str, Any]:
    shows_url = "roles.manage" in p.actor.permissions
    return {
        "max_lifetime_days": policy.max_lifetime_days,
        "expiration_required": policy.expiration_required,
        "auto_revoke_unused_days": policy.auto_revoke_unused_days,
        "webhook_configured": policy.webhook_configured,
        "webhook_url": policy.webhook_url if shows_url else None,
        "require_allowlist": policy.require_allowlist,
        "updated_at": policy.updated_at,
    }


@router.get("/policies", response_model=PolicyOut, tags=["policies"], summary="Your tenant's token policy")
def get_policy(p: AnyPrincipal, request: Request) -> dict[str, Any]:
    """Readable by every member (the create form shows the rules)."""
    assert p.actor.tenant_id is not None
    return policy_json(services(request).policies.get(p.actor.tenant_id), p)


@router.put(
    "/policies",
    response_model=PolicyUpdatedOut,
    tags=["policies"],
    summary="Change the token policy",
    responses={
        **BODY_ERRORS,
        **conflict(
            "encryption_key_required: webhook secrets are stored only encrypted and the operator has set no "
            "KBAI_ENCRYPTION_KEY (PostgreSQL)."
        ),
    },
)
def put_policy(body: PolicyIn, p: RolesManage, request: Request) -> dict[str, Any]:
    """Needs roles.manage. Only the fields sent change; null removes a rule. Audited (a webhook URL by its
    scheme and host only). A webhook URL must reach a public address: one that is, or resolves to, a
    loopback, private, link-local (cloud metadata), carrier-grade NAT or unique-local address, or names a
    metadata service, is a 422 `webhook_url_refused` saying why."""
    assert p.actor.tenant_id is not None
    sent = body.model_fields_set
    given = {
        name: getattr(body, name) if name in sent else UNSET
        for name in (
            "max_lifetime_days",
            "expiration_required",
            "auto_revoke_unused_days",
            "webhook_url",
            "require_allowlist",
        )
    }
    for flag in ("expiration_required", "require_allowlist"):
        if given[flag] is None:
            given[flag] = False
    policy, secret = services(request).policies.set(
        p.actor, p.actor.tenant_id, **given, new_webhook_secret=body.new_webhook_secret
    )
    return {**policy_json(policy, p), "webhook_secret": secret}

"""The tenant's token policy page (roles.manage)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from kbai import errors
from kbai.access.service import require
from kbai.errors import KbaiError
from kbai.web.auth import Principal, services
from kbai.web.pages.base import POLICY, PageRoute, check_form, page_user, render, see_other
from kbai.web.pages.inventory import TRUTHY

router = APIRouter(route_class=PageRoute, include_in_schema=False)


# ---- the tenant's token policy (roles.manage) ---------------------------------------------------
POLICY_ACTION = "change the token policy"


def _policy_page(
    request: Request,
    p: Principal,
    error: KbaiError | None = None,
    *,
    form: dict[str, Any] | None = None,
    secret: str | None = None,
) -> HTMLResponse:
    assert p.actor.tenant_id is not None
    policy = services(request).policies.get(p.actor.tenant_id)
    if form is None:
        form = {
            "max_lifetime_days": "" if policy.max_lifetime_days is None else str(policy.max_lifetime_days),
            "expiration_required": policy.expiration_required,
            "auto_revoke_unused_days": ""
            if policy.auto_revoke_unused_days is None
            else str(policy.auto_revoke_unused_days),
            "webhook_url": policy.webhook_url or "",
        }
    return render(
        request,
        "policy.html",
        p,
        status=error.status if error else 200,
        error=error,
        policy=policy,
        form=form,
        secret=secret,
    )


@router.get(POLICY)
def policy_page(request: Request) -> Response:
    p = page_user(request)
    require(p.actor, "roles.manage", POLICY_ACTION)
    return _policy_page(request, p)


def _days_field(value: str, label: str) -> int | None:
    """A "number of days" field: blank is "no rule"; the domain checks the range."""
    text = value.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise KbaiError(errors.VALIDATION, detail=f"{label} must be a whole number of days, or blank for no rule.")
    return int(text)


@router.post(POLICY)
def save_policy(
    request: Request,
    max_lifetime_days: Annotated[str, Form(max_length=40)] = "",
    expiration_required: Annotated[str, Form(max_length=10)] = "",
    auto_revoke_unused_days: Annotated[str, Form(max_length=40)] = "",
    webhook_url: Annotated[str, Form(max_length=4000)] = "",
    new_webhook_secret: Annotated[str, Form(max_length=10)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    require(p.actor, "roles.manage", POLICY_ACTION)
    assert p.actor.tenant_id is not None
    required = expiration_required.lower() in TRUTHY
    form = {
        "max_lifetime_days": max_lifetime_days,
        "expiration_required": required,
        "auto_revoke_unused_days": auto_revoke_unused_days,
        "webhook_url": webhook_url,
    }
    try:
        _policy, secret = services(request).policies.set(
            p.actor,
            p.actor.tenant_id,
            max_lifetime_days=_days_field(max_lifetime_days, "Maximum lifetime"),
            expiration_required=required,
            auto_revoke_unused_days=_days_field(auto_revoke_unused_days, "Auto-revoke"),
            webhook_url=webhook_url.strip() or None,
            new_webhook_secret=new_webhook_secret.lower() in TRUTHY,
        )
    except KbaiError as err:
        if err.code == "forbidden":
            raise
        return _policy_page(request, p, err, form=form)
    if secret is not None:
        # The signing secret is shown this once: a page, not a redirect, and never cached.
        return _policy_page(request, p, secret=secret)
    return see_other(f"{POLICY}?done=policy_saved")

"""A token's activity page: the hourly heatmap and recent uses."""

from __future__ import annotations

from contextlib import suppress
from datetime import timedelta

from fastapi import APIRouter, Request, Response
from markupsafe import Markup

from kbai.access.catalog import MANAGE_SERVICE_TOKENS
from kbai.errors import KbaiError
from kbai.lifecycle.activity import BASELINE_DAYS, DAYS, SHADES, heatmap_svg
from kbai.lifecycle.hygiene import LABELS as HYGIENE_LABELS
from kbai.lifecycle.hygiene import hygiene
from kbai.tokens.service import TokenView
from kbai.web.auth import services
from kbai.web.pages.base import Id, PageRoute, page_user, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


# ---- a token's activity -------------------------------------------------------------------------
def _cell(day: int, hour: int) -> str:
    return f"{DAYS[day]} {hour:02d}:00–{(hour + 1) % 24:02d}:00 UTC"


@router.get("/system-settings/api-keys/{token_id}/activity")
def activity_page(request: Request, token_id: Id) -> Response:
    """Your own token, a service token of your tenant (with developer.manage_service_tokens), or (with
    developer.review_tokens) any token of your tenant; others are 404."""
    p = page_user(request)
    svc = services(request)
    activity = svc.activity.for_token(p.actor, token_id)  # decides who may see it
    owner_email = None
    view: TokenView | None = None
    with suppress(KbaiError):
        view = svc.tokens.get(p.actor, token_id)
    if view is None and MANAGE_SERVICE_TOKENS in p.actor.permissions:
        with suppress(KbaiError):
            view = svc.tokens.get_service(p.actor, token_id)
    if view is None:
        row = svc.inventory.get(p.actor, token_id)  # a reviewer looking at someone else's token
        view, owner_email = row.view, row.owner_email
    baseline_end = view.created_at + timedelta(days=BASELINE_DAYS)
    peak = max(max(r) for r in activity.grid)
    busiest = [_cell(d, h) for d in range(7) for h in range(24) if peak and activity.grid[d][h] == peak]
    return render(
        request,
        "activity.html",
        p,
        token=view,
        owner_email=owner_email,
        activity=activity,
        heatmap=Markup(heatmap_svg(activity.grid)),  # built by the domain: escaped, no script, no style attribute
        shades=SHADES,
        peak=peak,
        busiest=busiest,
        active_hours=len(activity.hourly),
        baseline_end=baseline_end,
        learning=svc.clock.now() < baseline_end,
        unusual=[_cell(d, h) for d, h in activity.unusual_hours],
        badges=[(f, HYGIENE_LABELS[f]) for f in hygiene(view, svc.clock.now())],
    )

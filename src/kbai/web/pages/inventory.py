"""The tenant's token inventory (developer.review_tokens): filters, CSV and revoke."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response

from kbai import errors
from kbai.access.catalog import REVIEW_TOKENS
from kbai.access.service import require
from kbai.errors import KbaiError
from kbai.lifecycle.inventory import STATUSES, InventoryFilter
from kbai.web.api import MAX_ID
from kbai.web.auth import services
from kbai.web.pages.base import INVENTORY, Id, PageRoute, check_form, page_user, render, see_other
from kbai.web.pages.token_rows import _lag, table_badges

router = APIRouter(route_class=PageRoute, include_in_schema=False)


# ---- the tenant's token inventory (developer.review_tokens) -------------------------------------
INVENTORY_PAGE_SIZE = 100
TRUTHY = ("1", "on", "true", "yes")


def _inventory_query(
    owner: str | None, status: str | None, stale: str | None, expiring_soon: str | None
) -> dict[str, str]:
    """The filters as they go back into a URL (only the meaningful ones)."""
    out: dict[str, str] = {}
    if owner and owner.strip():
        out["owner"] = owner.strip()
    if status:
        out["status"] = status
    if stale and stale.lower() in TRUTHY:
        out["stale"] = "1"
    if expiring_soon and expiring_soon.lower() in TRUTHY:
        out["expiring_soon"] = "1"
    return out


@router.get(INVENTORY)
def inventory_page(
    request: Request,
    owner: str | None = None,
    status: str | None = None,
    stale: str | None = None,
    expiring_soon: str | None = None,
    cursor: str | None = None,
    done: str | None = None,
    token: str | None = None,
) -> Response:
    p = page_user(request)
    require(p.actor, REVIEW_TOKENS, "review the tenant's tokens")
    svc = services(request)
    revoked = None
    if done == "admin_revoked" and token and token.isascii() and token.isdigit() and len(token) <= 10:
        try:
            found = svc.inventory.get(p.actor, int(token))
            revoked = found if found.view.status == "revoked" else None
        except KbaiError:
            revoked = None
    query = _inventory_query(owner, status, stale, expiring_soon)
    error = None
    rows = []
    more = False
    owner_given = query.get("owner", "")
    if len(owner_given) > 320 or any(not ch.isprintable() for ch in owner_given):
        error = KbaiError(
            errors.VALIDATION, detail="The owner filter is an email (at most 320 characters) or a user id."
        )
    elif status and status not in STATUSES:
        error = KbaiError(errors.VALIDATION, detail="Pick a status from the list: active, paused, expired or revoked.")
    elif cursor is not None and not (
        cursor.isascii() and cursor.isdigit() and len(cursor) <= 10 and 1 <= int(cursor) <= MAX_ID
    ):
        error = KbaiError(errors.VALIDATION, detail="That page of the list does not exist; start again from the first.")
    else:
        where = InventoryFilter(
            owner=query.get("owner"),
            status=query.get("status"),
            stale="stale" in query,
            expiring_soon="expiring_soon" in query,
        )
        rows = svc.inventory.list(
            p.actor, where, before_id=int(cursor) if cursor else None, limit=INVENTORY_PAGE_SIZE + 1
        )
        more = len(rows) > INVENTORY_PAGE_SIZE
        rows = rows[:INVENTORY_PAGE_SIZE]
    now = svc.clock.now()
    return render(
        request,
        "inventory.html",
        p,
        status=error.status if error else 200,
        error=error,
        filters=query,
        rows=[(r, table_badges(r.view, now)) for r in rows],
        labels={perm.key: perm.label for perm in svc.catalog.permissions},
        lag=_lag(svc.settings.last_used_flush_seconds),
        statuses=STATUSES,
        export_url="/api/v1/admin/tokens/export" + (f"?{urlencode(query)}" if query else ""),
        older_url=f"{INVENTORY}?{urlencode({**query, 'cursor': rows[-1].view.id})}" if more else None,
        first_url=f"{INVENTORY}?{urlencode(query)}" if cursor and not error else None,
        query_string=urlencode(query),
        revoked=revoked,
        **({"notice": None} if revoked else {}),
    )


@router.post(INVENTORY + "/{token_id}/revoke")
def inventory_revoke(
    request: Request,
    token_id: Id,
    owner: Annotated[str, Form(max_length=320)] = "",
    status: Annotated[str, Form(max_length=20)] = "",
    stale: Annotated[str, Form(max_length=10)] = "",
    expiring_soon: Annotated[str, Form(max_length=10)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    services(request).inventory.revoke(p.actor, token_id)  # audited; the owner is notified
    back = _inventory_query(owner, status if status in STATUSES else None, stale, expiring_soon)
    return see_other(f"{INVENTORY}?{urlencode({'done': 'admin_revoked', 'token': token_id, **back})}")

"""The notifications page: what kbai.delivery.notifications holds for the person, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from kbai import errors
from kbai.errors import KbaiError
from kbai.web.api import MAX_ID
from kbai.web.auth import services
from kbai.web.pages.base import NOTIFICATIONS, Id, PageRoute, check_form, page_user, render, see_other

router = APIRouter(route_class=PageRoute, include_in_schema=False)


# ---- notifications ------------------------------------------------------------------------------
NOTIFICATION_KINDS = {
    "token.expiry_reminder": "Expiry reminder",
    "token.leaked": "Leak report",
    "token.revoked_by_admin": "Revoked by an admin",
    "token.auto_revoked": "Auto-revoked",
    "access.granted": "Access granted",
}
NOTIFICATIONS_PAGE_SIZE = 50


@router.get(NOTIFICATIONS)
def notifications_page(request: Request, cursor: str | None = None) -> Response:
    p = page_user(request)
    assert p.actor.user_id is not None
    svc = services(request)
    if cursor is not None and not (
        cursor.isascii() and cursor.isdigit() and len(cursor) <= 10 and 1 <= int(cursor) <= MAX_ID
    ):
        raise KbaiError(errors.VALIDATION, detail="That page of the list does not exist; start again from the first.")
    items = svc.notifications.list(
        p.actor.user_id, before_id=int(cursor) if cursor else None, limit=NOTIFICATIONS_PAGE_SIZE + 1
    )
    more = len(items) > NOTIFICATIONS_PAGE_SIZE
    items = items[:NOTIFICATIONS_PAGE_SIZE]
    return render(
        request,
        "notifications.html",
        p,
        items=items,
        kinds=NOTIFICATION_KINDS,
        older_url=f"{NOTIFICATIONS}?cursor={items[-1].id}" if more else None,
        paged=cursor is not None,
    )


@router.post(NOTIFICATIONS + "/read-all")
def read_all_notifications(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    assert p.actor.user_id is not None
    services(request).notifications.mark_read(p.actor.user_id)
    return see_other(f"{NOTIFICATIONS}?done=all_read")


@router.post(NOTIFICATIONS + "/{notification_id}/read")
def read_notification(
    request: Request, notification_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    p = check_form(request, csrf_token)
    assert p.actor.user_id is not None
    svc = services(request)
    if svc.notifications.get(p.actor.user_id, notification_id) is None:
        raise KbaiError(errors.NOT_FOUND, what="Notification")
    svc.notifications.mark_read(p.actor.user_id, notification_id)
    return see_other(f"{NOTIFICATIONS}?done=read")

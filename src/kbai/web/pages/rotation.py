"""Rotating a token from the API Keys page, with a grace period for the old one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from kbai import errors
from kbai.errors import KbaiError
from kbai.tokens.service import EXPIRY_PRESETS_DAYS
from kbai.web.auth import services
from kbai.web.pages.api_keys import API_KEYS, _api_keys_page
from kbai.web.pages.base import Id, PageRoute, _put_flash, check_form, see_other
from kbai.web.pages.token_rows import GRACE_CHOICES

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.post("/system-settings/api-keys/{token_id}/rotate")
def rotate_token(
    request: Request,
    token_id: Id,
    grace: Annotated[str, Form(max_length=20)] = "",
    lifetime: Annotated[str, Form(max_length=20)] = "same",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    return rotate_from_page(request, token_id, grace, lifetime, csrf_token, service=False)


def rotate_from_page(
    request: Request, token_id: int, grace: str, lifetime: str, csrf_token: str, *, service: bool
) -> Response:
    """The Rotate dialog of either table (``service``: the tenant's service tokens). A refusal other than "not
    found" (and, for a service token, a missing permission: the 403 page) is shown above its table."""
    p = check_form(request, csrf_token)
    tokens = services(request).tokens
    rotate = tokens.rotate_service if service else tokens.rotate
    try:
        seconds = _grace(grace)
        days = _lifetime(lifetime)
        new, plaintext, old = rotate(p.actor, token_id, seconds, expires_in_days=days)
    except KbaiError as err:
        if err.code == "not_found" or (service and err.status == 403):
            raise
        return _api_keys_page(request, p, err, error_at="service" if service else "table")
    # Shown once, like a new token, on the page this redirects to (post/redirect/get; never in a URL).
    kind = "service_rotated" if service else "rotated"
    _put_flash(request, p, {"kind": kind, "id": new.id, "old_id": old.id, "token": plaintext})
    return see_other(API_KEYS)


def _grace(value: str) -> int:
    for seconds, _label, _say in GRACE_CHOICES:
        if value == seconds:
            return int(seconds)
    raise KbaiError(
        errors.VALIDATION, detail="Choose how long the old token keeps working: none, 1 hour, 24 hours or 7 days."
    )


def _lifetime(value: str) -> int | None:
    """The rotate form's lifetime choice: None keeps the old lifetime (the domain's default)."""
    if value in ("", "same"):
        return None
    if value.isascii() and value.isdigit() and int(value) in EXPIRY_PRESETS_DAYS:
        return int(value)
    raise KbaiError(errors.VALIDATION, detail="Choose the new token's lifetime from the list.")

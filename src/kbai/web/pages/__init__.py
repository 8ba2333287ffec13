"""The server-rendered pages, one module per area, on the shared helpers of ``base``.

Routes are thin: they check the session and the form's CSRF field, call the domain services with
the user's Actor, and render a Jinja2 template (autoescaped). Every failure a person can see is a
``KbaiError`` from ``kbai.errors``, shown in the page, never a traceback. Pages are never cached:
they carry per-user data, and the token-created page carries the one copy of a token.

``router`` gathers the areas' routers in the order their routes must match.
"""

from __future__ import annotations

from fastapi import APIRouter

from kbai.web.pages import (
    activity,
    api_keys,
    inventory,
    login,
    new_token,
    notifications,
    policy,
    provisioning,
    roles,
    rotation,
    service_ceiling,
    service_tokens,
    users,
)
from kbai.web.pages.base import HOME, STATIC_DIR, PageRoute

AREAS = (
    login,
    roles,
    users,
    api_keys,
    new_token,
    service_tokens,
    service_ceiling,
    rotation,
    activity,
    inventory,
    policy,
    notifications,
    provisioning,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
for _area in AREAS:  # the routes themselves, flat, in this order (include_router would nest them)
    router.routes.extend(_area.router.routes)

__all__ = ["AREAS", "HOME", "STATIC_DIR", "router"]

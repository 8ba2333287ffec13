"""The tenant's service-token ceiling on its own page (issue #19): what every service token of the tenant may
do at most. A holder of developer.manage_service_tokens sees it; one who also holds roles.manage changes it
(the service checks both again, and that every allowed permission is held and not session-only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from kbai import errors
from kbai.errors import KbaiError
from kbai.web.auth import Principal, services
from kbai.web.pages.base import PageRoute, check_form, page_user, render, see_other
from kbai.web.pages.forms import grouped
from kbai.web.pages.service_tokens import SERVICE_TOKENS, _holder

router = APIRouter(route_class=PageRoute, include_in_schema=False)
CEILING = SERVICE_TOKENS + "/ceiling"
MODES = ("custom", "default")


def _page(
    request: Request, p: Principal, error: KbaiError | None = None, *, checked: list[str] | None = None
) -> HTMLResponse:
    _holder(p, "see the service-token ceiling")
    svc = services(request)
    assert p.actor.tenant_id is not None and p.session is not None
    ceiling = svc.tokens.ceiling(p.actor.tenant_id)
    allowed = frozenset(ceiling or ())
    usable = svc.catalog.token_usable(p.actor.permissions)
    notice = None
    if request.query_params.get("done") == "saved" and error is None:
        notice = f"Ceiling saved. Every service token of {p.session.tenant_name} acts within it from its next request."
    return render(
        request,
        "service_token_ceiling.html",
        p,
        status=error.status if error else 200,
        error=error,
        notice=notice,  # replaces base's "saved" notice (that one is about roles)
        ceiling=ceiling,
        allowed_groups=grouped(svc.catalog, allowed) if ceiling is not None else [],
        can_edit="roles.manage" in p.actor.permissions,
        groups=grouped(svc.catalog, usable),
        unheld=[key for key in ceiling or () if key not in usable],  # set by someone holding more
        form={"scopes": list(ceiling or ()) if checked is None else checked},
        field_errors={},
    )


@router.get(CEILING)
def service_ceiling_page(request: Request) -> Response:
    p = page_user(request)
    return _page(request, p)


@router.post(CEILING)
def save_service_ceiling(
    request: Request,
    permissions: Annotated[list[str] | None, Form()] = None,
    mode: Annotated[str, Form(max_length=20)] = "custom",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    _holder(p, "change the service-token ceiling")
    try:
        if mode not in MODES:
            raise KbaiError(errors.BAD_REQUEST, detail="Unknown choice in the form; reload the page and try again.")
        services(request).tokens.set_ceiling(p.actor, None if mode == "default" else list(permissions or []))
    except KbaiError as err:
        if err.code in ("forbidden", "not_found"):
            raise
        return _page(request, p, err, checked=[k[:100] for k in permissions or []])
    return see_other(f"{CEILING}?done=saved")

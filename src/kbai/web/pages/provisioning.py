"""System Settings > Provisioning (SCIM): create a provisioning credential (shown once, with the SCIM base URL
to paste into the identity provider), list and revoke them. For a member holding every permission of the
tenant; the rules are :class:`kbai.access.provisioning.ProvisioningCredentials`'."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from kbai import errors
from kbai.errors import KbaiError
from kbai.web.auth import Principal, services
from kbai.web.pages.base import HOME, Id, PageRoute, check_form, page_user, render, see_other
from kbai.web.provisioning import scim_base_url

PROVISIONING = HOME + "/provisioning"
router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _allowed(request: Request, p: Principal) -> None:
    if not services(request).catalog.keys <= p.actor.permissions:
        raise KbaiError(errors.SCIM_CREDENTIAL_NEEDS_ALL)


def _page(
    request: Request, p: Principal, error: KbaiError | None = None, secret: str | None = None, name: str = ""
) -> Response:
    assert p.actor.tenant_id is not None
    views = services(request).provisioning.list(p.actor, p.actor.tenant_id)
    return render(
        request,
        "provisioning.html",
        p,
        status=error.status if error else 200,
        error=error,
        credentials=views,
        secret=secret,
        base_url=scim_base_url(request),
        new_name=name,
    )


@router.get(PROVISIONING)
def provisioning_page(request: Request) -> Response:
    p = page_user(request)
    _allowed(request, p)
    return _page(request, p)


@router.post(PROVISIONING)
def create_provisioning_credential(
    request: Request,
    name: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    _allowed(request, p)
    assert p.actor.tenant_id is not None
    try:
        _, secret = services(request).provisioning.create(p.actor, p.actor.tenant_id, name or "SCIM")
    except KbaiError as err:
        if err.code == "forbidden":
            raise
        return _page(request, p, err, name=name)
    # Shown this once: a page, not a redirect, and never cached (render sets no-store).
    return _page(request, p, secret=secret)


@router.post(PROVISIONING + "/{credential_id}/revoke")
def revoke_provisioning_credential(
    request: Request, credential_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    p = check_form(request, csrf_token)
    _allowed(request, p)
    assert p.actor.tenant_id is not None
    services(request).provisioning.revoke(p.actor, p.actor.tenant_id, credential_id)
    return see_other(f"{PROVISIONING}?done=scim_revoked")

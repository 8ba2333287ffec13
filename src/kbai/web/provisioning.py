"""SCIM provisioning credentials in the API: create (the secret is shown once, with the SCIM base URL to paste
into the identity provider), list and revoke, for a signed-in member holding every permission of the tenant
(see :class:`kbai.access.provisioning.ProvisioningCredentials`); ``kbai scim-token`` does the same."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from kbai.access.provisioning import ProvisioningView
from kbai.web.api import BODY_ERRORS, ERRORS, creates
from kbai.web.auth import SessionPrincipal, services
from kbai.web.idempotency import idempotent

router = APIRouter(prefix="/api/v1", tags=["provisioning"], responses=ERRORS)
CredentialId = Annotated[int, Path(ge=1, le=2_147_483_647, description="The credential's id.")]


class ScimCredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        default="SCIM",
        min_length=1,
        max_length=100,
        examples=["Okta"],
        description="What will use it, e.g. the identity provider's name.",
    )


class ScimCredentialOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(examples=["kbai_scim_1a2b"], description="First 14 characters of the secret.")
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None
    revoked_at: datetime | None = Field(description="null while active")
    status: Literal["active", "revoked"]


class ScimCredentialCreatedOut(ScimCredentialOut):
    token: str | None = Field(
        description="The secret (kbai_scim_...), shown only in this answer (null on an "
        "Idempotency-Key replay). Send it as `Authorization: Bearer`."
    )
    scim_base_url: str = Field(
        examples=["https://kbai.example.com/scim/v2"],
        description="Paste into the identity provider as the SCIM base URL.",
    )


class ScimCredentialListOut(BaseModel):
    scim_credentials: list[ScimCredentialOut]
    scim_base_url: str
    next_cursor: None = None


def scim_base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/scim/v2"


def credential_json(c: ProvisioningView) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "prefix": c.prefix,
        "created_at": c.created_at,
        "created_by": c.created_by,
        "last_used_at": c.last_used_at,
        "revoked_at": c.revoked_at,
        "status": c.status,
    }


@router.get("/scim-credentials", response_model=ScimCredentialListOut, summary="List SCIM provisioning credentials")
def list_scim_credentials(p: SessionPrincipal, request: Request) -> dict[str, Any]:
    """The tenant's provisioning credentials, active first (never a secret). For a member holding every
    permission of the tenant."""
    assert p.actor.tenant_id is not None
    views = services(request).provisioning.list(p.actor, p.actor.tenant_id)
    return {
        "scim_credentials": [credential_json(c) for c in views],
        "scim_base_url": scim_base_url(request),
        "next_cursor": None,
    }


@router.post(
    "/scim-credentials",
    status_code=201,
    response_model=ScimCredentialCreatedOut,
    summary="Create a SCIM provisioning credential",
    responses={**creates("An active credential has that name."), **BODY_ERRORS},
)
@idempotent
def create_scim_credential(
    p: SessionPrincipal, request: Request, body: ScimCredentialIn | None = None
) -> dict[str, Any]:
    """A credential for the tenant's identity provider. The response is the only time its secret is shown."""
    assert p.actor.tenant_id is not None
    view, secret = services(request).provisioning.create(p.actor, p.actor.tenant_id, (body or ScimCredentialIn()).name)
    return {**credential_json(view), "token": secret, "scim_base_url": scim_base_url(request)}


@router.post(
    "/scim-credentials/{credential_id}/revoke",
    response_model=ScimCredentialOut,
    summary="Revoke a SCIM provisioning credential",
)
def revoke_scim_credential(credential_id: CredentialId, p: SessionPrincipal, request: Request) -> dict[str, Any]:
    """Its next SCIM request is refused (401). Idempotent."""
    assert p.actor.tenant_id is not None
    return credential_json(services(request).provisioning.revoke(p.actor, p.actor.tenant_id, credential_id))

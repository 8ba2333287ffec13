"""Service credentials in the API: list and revoke, for the deployment's operators only (see
:class:`kbai.access.credentials.CredentialService`); ``kbai service-credential`` does the same."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from kbai.access.credentials import CredentialView
from kbai.web.api import ERRORS
from kbai.web.auth import AnyPrincipal, services

router = APIRouter(prefix="/api/v1", tags=["service credentials"], responses=ERRORS)
ClientId = Annotated[str, Path(max_length=64, description="The credential's client id (kbai_sc_...).")]


class CredentialOut(BaseModel):
    id: int
    name: str
    client_id: str = Field(examples=["kbai_sc_1a2b3c4d5e6f7a8b"])
    created_at: datetime
    revoked_at: datetime | None = Field(description="null while active")
    status: Literal["active", "revoked"]
    abilities: list[Literal["introspect", "tenants", "tokens"]] = Field(
        description="What it may do: introspect (RFC 7662), tenants and tokens (the operator API)."
    )


class CredentialListOut(BaseModel):
    service_credentials: list[CredentialOut]
    next_cursor: None = None


def credential_json(c: CredentialView) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "client_id": c.client_id,
        "created_at": c.created_at,
        "revoked_at": c.revoked_at,
        "status": c.status,
        "abilities": list(c.abilities),
    }


@router.get("/service-credentials", response_model=CredentialListOut, summary="List service credentials")
def list_service_credentials(p: AnyPrincipal, request: Request) -> dict[str, Any]:
    """Every introspection credential of the deployment, active and revoked (never a secret). Only for an
    admin of the operator tenant (`KBAI_OPERATOR_TENANT`) with a session."""
    views = services(request).credentials.list(p.actor)
    return {"service_credentials": [credential_json(c) for c in views], "next_cursor": None}


@router.post(
    "/service-credentials/{client_id}/revoke", response_model=CredentialOut, summary="Revoke a service credential"
)
def revoke_service_credential(client_id: ClientId, p: AnyPrincipal, request: Request) -> dict[str, Any]:
    """Introspection refuses it at once (401 `invalid_client`). Idempotent."""
    return credential_json(services(request).credentials.revoke(p.actor, client_id))

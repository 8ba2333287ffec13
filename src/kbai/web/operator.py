"""The operator API, for the product's backend: tenants (create, read by id or ``external_id``, rename, set
limits), memberships (create, deactivate) and tokens issued on a person's behalf.

Authenticated with a service credential (HTTP Basic, ``kbai service-credential create NAME --allow
tenants,tokens``), each route needing one ability: ``tenants`` for tenants and memberships, ``tokens`` for
tokens. A token issued on a person's behalf follows exactly the rules of that person creating it on the API
Keys page (``developer.manage_tokens``, scopes they hold now, their limit, the tenant's policy): it is the
same :meth:`kbai.tokens.service.TokenService.create`, audited as "service:CREDENTIAL for user:EMAIL".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from kbai import errors
from kbai.errors import KbaiError
from kbai.store.audit import Actor
from kbai.web import schemas as sc
from kbai.web.api import BODY_ERRORS, ERRORS, MAX_ID, creates, tokens_json, user_json
from kbai.web.auth import Principal, client_ip, services
from kbai.web.clients import authenticate_client
from kbai.web.idempotency import idempotent

if TYPE_CHECKING:
    from kbai.store.models import Tenant

router = APIRouter(prefix="/api/v1/operator", tags=["operator"], responses=ERRORS)
TenantId = Annotated[int, Path(ge=1, le=MAX_ID, description="The tenant's id.")]
MembershipId = Annotated[int, Path(ge=1, le=MAX_ID, description="The membership's id (a user id of the tenant).")]
SECURITY: list[dict[str, list[str]]] = [{"serviceCredential": []}]


def _needs(ability: str, action: str) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        credential = await authenticate_client(services(request), request)
        if ability not in credential.abilities:
            raise KbaiError(errors.CREDENTIAL_LACKS_ABILITY, action=action, ability=ability)
        return Principal(credential.actor(client_ip(request)), "session")

    dependency.__qualname__ = f"operator_needs.{ability}"
    return dependency


TenantsCredential = Annotated[Principal, Depends(_needs("tenants", "manage tenants and memberships"))]
TokensCredential = Annotated[Principal, Depends(_needs("tokens", "issue tokens on a person's behalf"))]


class TenantCreateIn(sc.Strict):
    name: str = Field(max_length=1000, examples=["Acme Inc"])
    external_id: str = Field(
        max_length=1000,
        examples=["org_2abc"],
        description="Your product's id of this organisation (unique); people who sign in with "
        "single sign-on land here by it.",
    )


class TenantUpdateIn(sc.Strict):
    name: str | None = Field(default=None, max_length=1000, description="A new name.")
    max_active_tokens: int | None = Field(
        default=None, strict=True, ge=1, le=100_000, description="The tenant's active-token limit per person."
    )
    reset_max_active_tokens: bool = Field(default=False, description="true: back to the deployment's default.")


class TenantOut(BaseModel):
    id: int
    name: str
    external_id: str | None
    max_active_tokens: int | None = Field(description="null: the deployment's default")
    created_at: Any


class MembershipCreateIn(sc.Strict):
    email: str = Field(max_length=320, examples=["jo@acme.example"])
    roles: list[str | int] = Field(
        default_factory=list, max_length=100, description="Role names or ids; Member when empty."
    )
    external_id: str | None = Field(default=None, max_length=1000, description="Your product's id of this person here.")


def _tenant_json(t: Tenant) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "external_id": t.external_id,
        "max_active_tokens": t.max_active_tokens,
        "created_at": t.created_at,
    }


def _tenant(request: Request, tenant_id: int) -> Tenant:
    tenant = services(request).access.tenant_by_id(tenant_id)
    if tenant is None:
        raise KbaiError(errors.NOT_FOUND, what="Tenant")
    return tenant


@router.post(
    "/tenants",
    status_code=201,
    response_model=TenantOut,
    summary="Create a tenant",
    openapi_extra={"security": SECURITY},
    responses={**creates("A tenant has that name or external id."), **BODY_ERRORS},
)
@idempotent
def create_operator_tenant(body: TenantCreateIn, p: TenantsCredential, request: Request) -> dict[str, Any]:
    """A tenant with its built-in Admin and Member roles and no one in it yet: add memberships, or let its
    first person sign in with single sign-on (they become its admin)."""
    tenant, _, _ = services(request).access.create_tenant(p.actor, body.name, external_id=body.external_id)
    return _tenant_json(tenant)


@router.get(
    "/tenants",
    response_model=TenantOut,
    summary="Find a tenant by external id",
    openapi_extra={"security": SECURITY},
    responses={404: {"model": sc.ErrorOut, "description": "No tenant has that external id."}},
)
def get_operator_tenant_by_external_id(
    p: TenantsCredential,
    request: Request,
    external_id: Annotated[str, Query(min_length=1, max_length=200, description="Your product's id of it.")],
) -> dict[str, Any]:
    found = services(request).access.tenant_by_external_id(external_id.strip())
    if found is None:
        raise KbaiError(errors.NOT_FOUND, what="Tenant")
    return _tenant_json(found)


@router.get(
    "/tenants/{tenant_id}", response_model=TenantOut, summary="Get a tenant", openapi_extra={"security": SECURITY}
)
def get_operator_tenant(tenant_id: TenantId, p: TenantsCredential, request: Request) -> dict[str, Any]:
    return _tenant_json(_tenant(request, tenant_id))


@router.patch(
    "/tenants/{tenant_id}",
    response_model=TenantOut,
    summary="Rename a tenant or set its limit",
    openapi_extra={"security": SECURITY},
    responses={**BODY_ERRORS, 409: {"model": sc.ErrorOut, "description": "Name taken."}},
)
def update_operator_tenant(
    tenant_id: TenantId, body: TenantUpdateIn, p: TenantsCredential, request: Request
) -> dict[str, Any]:
    """Audited like the same change made with the CLI."""
    svc = services(request)
    tenant = _tenant(request, tenant_id)
    if body.max_active_tokens is not None and body.reset_max_active_tokens:
        raise KbaiError(errors.VALIDATION, detail="Give max_active_tokens or reset_max_active_tokens, not both.")
    if body.name is not None:
        tenant = svc.access.rename_tenant(p.actor, tenant_id, body.name)
    if body.max_active_tokens is not None or body.reset_max_active_tokens:
        svc.access.set_limit(p.actor, body.max_active_tokens, tenant_name=tenant.name)
    return _tenant_json(_tenant(request, tenant_id))


@router.post(
    "/tenants/{tenant_id}/memberships",
    status_code=201,
    response_model=sc.UserOut,
    summary="Create a membership",
    openapi_extra={"security": SECURITY},
    responses={**creates("Someone has that email, or that external id here."), **BODY_ERRORS},
)
@idempotent
def create_operator_membership(
    tenant_id: TenantId, body: MembershipCreateIn, p: TenantsCredential, request: Request
) -> dict[str, Any]:
    """A person in the tenant with the given roles (any role: the operator API has operator trust). No
    password is set or returned: they sign in with single sign-on, or an operator sets one."""
    _tenant(request, tenant_id)
    view, _ = services(request).access.create_user(
        p.actor, tenant_id, body.email, None, body.roles, external_id=body.external_id, generate_password=False
    )
    return user_json(view)


@router.post(
    "/memberships/{membership_id}/deactivate",
    response_model=sc.UserOut,
    summary="Deactivate a membership",
    openapi_extra={"security": SECURITY},
    responses={409: {"model": sc.ErrorOut, "description": "The tenant's last active admin."}},
)
def deactivate_operator_membership(
    membership_id: MembershipId, p: TenantsCredential, request: Request
) -> dict[str, Any]:
    """Their sessions end and their tokens stop at once, on every instance (not revoked: reactivating brings
    back those that were neither revoked nor expired)."""
    return user_json(services(request).access.deactivate_user(p.actor, membership_id))


def _person(request: Request, membership_id: int, credential: Actor) -> Actor:
    """The person as the token rules see them when they act themselves, issued through ``credential``."""
    return services(request).access.acting_for(membership_id, credential)


@router.post(
    "/memberships/{membership_id}/tokens",
    status_code=201,
    response_model=sc.TokenCreatedOut,
    summary="Issue a token on a person's behalf",
    openapi_extra={"security": SECURITY},
    responses={**creates("Their limit is reached, or they have an active token of that name."), **BODY_ERRORS},
)
@idempotent
def create_operator_token(
    membership_id: MembershipId, body: sc.TokenCreateIn, p: TokensCredential, request: Request
) -> dict[str, Any]:
    """The same body as `POST /api/v1/tokens` and the same rules as the person creating it themselves: they
    must hold `developer.manage_tokens`, the scopes must be among their current permissions, their active
    limit and the tenant's policy apply. The full token is in this answer only; the person sees the token
    on their API Keys page like any other, and may revoke it."""
    person = _person(request, membership_id, p.actor)
    view, plaintext = services(request).tokens.create(
        person, body.name, body.scopes, expires_in_days=body.expires_in_days, expires_at=body.expires_at
    )
    return {**tokens_json(request, [view])[0], "token": plaintext}

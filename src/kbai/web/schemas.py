"""Request and response bodies of the JSON API (they are also the OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

TIME = "ISO 8601 UTC, e.g. 2027-03-01T12:00:00Z; null when unset"
DESCRIPTION = "A free-text note, at most 500 characters."
ALLOWED_IPS = (
    "IPv4 and IPv6 addresses or CIDR ranges (at most 50) the token may be used from; null: anywhere. "
    "Requests from elsewhere get 401 invalid_token."
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


RATE_LIMIT = (
    "At most `requests` per `per` (a fixed UTC second, minute or hour), across every kbai instance; null: no "
    "limit. Over it: 429 rate_limited with Retry-After (401 with Retry-After at /auth/check)."
)
QUOTA = (
    "Requests left; with `refill`, set back to `amount` at each UTC midnight (day) or on the 1st of each month "
    "(month). Spent: 429 quota_exhausted (401 at /auth/check) until the refill. null: no quota."
)


class RateLimitIn(Strict):
    requests: int = Field(strict=True, ge=1, le=1_000_000_000, examples=[100])
    per: Literal["second", "minute", "hour"] = Field(examples=["minute"])


class RefillIn(Strict):
    amount: int = Field(strict=True, ge=1, le=2_000_000_000, examples=[10000])
    interval: Literal["day", "month"] = Field(examples=["month"])


class QuotaIn(Strict):
    remaining: int = Field(strict=True, ge=0, le=2_000_000_000, examples=[10000])
    refill: RefillIn | None = None


class QuotaOut(BaseModel):
    remaining: int = Field(description="Requests left now (exact on one instance; see docs/restrictions.md).")
    refill: RefillIn | None = None


class ErrorBody(BaseModel):
    code: str = Field(examples=["token_limit_reached"])
    message: str = Field(examples=["You have 10 active tokens; the limit is 10. Revoke one before creating a new one."])


class ErrorOut(BaseModel):
    error: ErrorBody


class LoginIn(Strict):
    email: str = Field(max_length=320, examples=["dev@acme.test"])
    password: str = Field(max_length=1024)
    tenant: int | str | None = Field(
        default=None,
        description="Which of your tenants to log into (id, name or external id). Default: the one you used last.",
    )


class SessionTenantIn(Strict):
    tenant: int | str = Field(description="The tenant to switch to: id, name or external id.")


class UserBrief(BaseModel):
    id: int
    email: str


class TenantBrief(BaseModel):
    id: int
    name: str
    external_id: str | None = Field(default=None, description="The product's own id of this tenant, when set.")


class LoginOut(BaseModel):
    csrf_token: str = Field(description="Send it as X-CSRF-Token on every cookie-authenticated write.")
    user: UserBrief = Field(description="You: `id` is your person id, the same in every tenant.")
    tenant: TenantBrief = Field(description="The tenant this session acts in.")
    tenants: list[TenantBrief] = Field(
        default_factory=list,
        description="Every tenant you are an active member of; switch with POST /api/v1/session/tenant.",
    )


class SessionTenantsOut(BaseModel):
    tenants: list[TenantBrief]
    current: int = Field(description="The id of the tenant this session acts in.")
    next_cursor: str | None = None


class TokenCreateIn(Strict):
    name: str = Field(
        max_length=1000,
        examples=["Zapier production"],
        description="1-100 characters after trimming; unique among your active tokens.",
    )
    scopes: list[str] = Field(
        max_length=200,
        examples=[["users.read", "roles.read"]],
        description="Permissions you hold now that a token can use (not the session-only ones); GET /api/v1/permissions lists them.",
    )
    expires_in_days: int | None = Field(
        default=None, strict=True, examples=[90], description="1-3650. We recommend 90."
    )
    expires_at: str | None = Field(
        default=None,
        max_length=40,
        examples=["2027-03-31"],
        description="A date (the token works through that day, UTC) or an ISO 8601 time with a zone.",
    )
    description: str | None = Field(
        default=None, max_length=2000, examples=["Posts new contacts to the CRM"], description=DESCRIPTION
    )
    allowed_ips: list[str] | None = Field(
        default=None, max_length=200, examples=[["203.0.113.0/24", "2001:db8::/32"]], description=ALLOWED_IPS
    )
    self_rotate: bool | None = Field(
        default=None,
        strict=True,
        description="true: the token may rotate itself with POST /api/v1/tokens/self/rotate (for automation). Default false.",
    )
    rate_limit: RateLimitIn | None = Field(default=None, description=RATE_LIMIT)
    quota: QuotaIn | None = Field(default=None, description=QUOTA)


class TokenPatchIn(Strict):
    """Only the fields you send change."""

    name: str | None = Field(default=None, max_length=1000, description="1-100 characters after trimming.")
    description: str | None = Field(default=None, max_length=2000, description=DESCRIPTION + " null removes it.")
    allowed_ips: list[str] | None = Field(
        default=None, max_length=200, description=ALLOWED_IPS + " null or [] removes it."
    )
    scopes: list[str] | None = Field(
        default=None, max_length=200, description="Scopes can only shrink: a subset of the token's scopes."
    )
    expires_in_days: int | None = Field(default=None, strict=True, description="An earlier expiry, days from now.")
    expires_at: str | None = Field(
        default=None, max_length=40, description="An earlier expiry: a date or an ISO 8601 time with a zone."
    )
    rate_limit: RateLimitIn | None = Field(default=None, description=RATE_LIMIT + " null removes it.")
    quota: QuotaIn | None = Field(
        default=None, description=QUOTA + " Sending it sets the quota anew (the count starts again); null removes it."
    )


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(examples=["kbai_pk_a1b2"], description="First 12 characters of the token.")
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = Field(description="Last successful request; may lag by the flush interval. " + TIME)
    expires_at: datetime | None = Field(description="null: never expires. " + TIME)
    status: Literal["active", "paused", "expired", "revoked"] = Field(
        description="paused: refused until resumed (POST /api/v1/tokens/{id}/resume)."
    )
    description: str | None = Field(default=None, description=DESCRIPTION)
    allowed_ips: list[str] | None = Field(default=None, description=ALLOWED_IPS)
    self_rotate: bool = False
    rate_limit: RateLimitIn | None = Field(default=None, description=RATE_LIMIT)
    quota: QuotaOut | None = Field(default=None, description=QUOTA)
    paused_at: datetime | None = Field(default=None, description="When it was paused. " + TIME)
    rotated_from_id: int | None = Field(default=None, description="The token this one replaced by rotation.")
    rotated_to_id: int | None = Field(default=None, description="The token that replaced this one by rotation.")
    service: bool = Field(
        default=False, description="true: a service token, owned by the tenant (GET /api/v1/service-tokens)."
    )
    created_by: int | None = Field(
        default=None,
        description="A service token's creator (or its owner before a hand-over at deactivation): a user id.",
    )
    hygiene: list[Literal["never_used", "unused_90_days", "older_than_90_days"]] = Field(
        default_factory=list,
        description="Active tokens only: never_used; unused_90_days (no use, or no use since creation, for 90+ "
        "days); older_than_90_days (created 90+ days ago: rotate it).",
    )


class TokenCreatedOut(TokenOut):
    token: str | None = Field(
        examples=["kbai_pk_" + "0" * 64],
        description="The full token. Shown this once: store it in a secrets manager now. null only on an "
        "Idempotency-Key replay (Idempotent-Replayed: true): the token is never shown twice.",
    )


class RotatedOut(TokenCreatedOut):
    rotated_from: TokenOut = Field(description="The old token; it stops at its revoked time (after the grace period).")
    old_token_stops_at: datetime


class TokenListOut(BaseModel):
    tokens: list[TokenOut]
    next_cursor: str | None


class ServiceTokenListOut(TokenListOut):
    active: int = Field(description="Active service tokens of the tenant (as the limit counts them).")
    limit: int = Field(description="The most active service tokens the tenant may hold.")


class ServiceTokenCreateIn(Strict):
    name: str = Field(
        max_length=1000,
        examples=["CI deploys"],
        description="1-100 characters after trimming; unique among the tenant's active service tokens.",
    )
    scopes: list[str] = Field(
        max_length=200,
        examples=[["users.read"]],
        description="Permissions you hold now that a token can use; afterwards the tenant's ceiling bounds them.",
    )
    expires_in_days: int | None = Field(default=None, strict=True, examples=[90], description="1-3650.")
    expires_at: str | None = Field(
        default=None, max_length=40, examples=["2027-03-31"], description="A date or an ISO 8601 time with a zone."
    )
    description: str | None = Field(default=None, max_length=2000, description=DESCRIPTION)
    allowed_ips: list[str] | None = Field(default=None, max_length=200, description=ALLOWED_IPS)
    rate_limit: RateLimitIn | None = Field(default=None, description=RATE_LIMIT)
    quota: QuotaIn | None = Field(default=None, description=QUOTA)


class CeilingIn(Strict):
    permissions: list[str] | None = Field(
        max_length=200,
        examples=[["users.read", "roles.read"]],
        description="What service tokens of the tenant may act with at most; null: the default (each token's "
        "own scopes, which were bounded by its creator's permissions).",
    )


class CeilingOut(BaseModel):
    permissions: list[str] | None = Field(description="null: the default ceiling.")
    default: bool = Field(description="true when no ceiling is set (permissions is null).")


class DeactivateIn(Strict):
    hand_over: list[Annotated[int, Field(strict=True, ge=1, le=2_147_483_647)]] = Field(
        default_factory=list,
        max_length=1000,
        description="Ids of the user's active tokens to keep as service tokens of the tenant (same plaintext, "
        "scopes cut to the ceiling); the others stop.",
    )


class UserTokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    status: Literal["active", "paused"]
    last_used_at: datetime | None
    expires_at: datetime | None


class UserTokensOut(BaseModel):
    tokens: list[UserTokenOut] = Field(description="The user's working tokens (what a deactivation may hand over).")


class RotateIn(Strict):
    grace_period_seconds: int = Field(
        default=0, ge=0, le=604800, strict=True, description="How long the old token keeps working: 0 (now) to 7 days."
    )
    expires_in_days: int | None = Field(
        default=None,
        strict=True,
        examples=[90],
        description="The new token's lifetime in days (1-3650); default: the old token's lifetime. Use it when the tenant's policy no longer allows that lifetime.",
    )


class SelfRotateIn(Strict):
    grace_period_seconds: int = Field(
        default=0, ge=0, le=604800, strict=True, description="How long the old token keeps working: 0 (now) to 7 days."
    )


class MeOut(BaseModel):
    user: UserBrief | None = Field(description="The person; null for a service token (owned by the tenant).")
    tenant: TenantBrief
    scopes: list[str] = Field(
        description="What this request may do: your permissions, or the token's effective scopes."
    )
    token_id: int | None = Field(default=None, description="Set when called with a token.")
    auth: Literal["session", "token"]


class PermissionOut(BaseModel):
    key: str
    label: str
    session_only: bool = Field(
        description="Needs an interactive session: never a token scope (managing tokens, users and roles)."
    )


class PermissionGroupOut(BaseModel):
    name: str
    permissions: list[PermissionOut]


class CatalogOut(BaseModel):
    groups: list[PermissionGroupOut]


class RoleOut(BaseModel):
    id: int
    name: str
    permissions: list[str]
    builtin: bool


class RoleListOut(BaseModel):
    roles: list[RoleOut]
    next_cursor: str | None


class RoleCreateIn(Strict):
    name: str = Field(max_length=1000)
    permissions: list[str] = Field(default_factory=list, max_length=500)


class RoleUpdateIn(Strict):
    permissions: list[str] | None = Field(default=None, max_length=500)
    name: str | None = Field(default=None, max_length=1000)


class UserOut(BaseModel):
    id: int
    email: str
    roles: list[str]
    active: bool
    external_id: str | None = Field(default=None, description="The product's own id of this user, when set.")


class UserListOut(BaseModel):
    users: list[UserOut]
    next_cursor: str | None


# A role id (a JSON integer: strict, so true or 1.5 is a 422 rather than role id 1) or a role name.
RoleRef = Annotated[int, Field(strict=True)] | str


class UserCreateIn(Strict):
    email: str = Field(max_length=320)
    roles: list[RoleRef] = Field(
        default_factory=list, max_length=100, description="Role ids or names; Member when empty."
    )
    external_id: str | None = Field(
        default=None, max_length=1000, description="The product's id of this person in this tenant (unique per tenant)."
    )


class UserCreatedOut(UserOut):
    invitation_url: str | None = Field(
        default=None,
        description="A one-time link (72 hours) for the person: a new "
        "person sets a password there, an existing one confirms with their own login. "
        "Shown once (null on an Idempotency-Key replay); emailed too when SMTP is set.",
    )
    invitation_expires_at: str | None = None


class UserRolesIn(Strict):
    roles: list[RoleRef] = Field(max_length=100)


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str | None
    ip: str | None
    details: dict[str, object]


class AuditListOut(BaseModel):
    events: list[AuditEventOut]
    next_cursor: str | None


class IntrospectionOut(BaseModel):
    """RFC 7662 section 2.2. An inactive token gets {"active": false} and nothing else."""

    model_config = ConfigDict(extra="allow")
    active: bool
    scope: str | None = None
    sub: str | None = None
    username: str | None = None
    tenant: str | None = None
    token_id: int | None = None
    exp: int | None = None
    iat: int | None = None
    token_type: str | None = None
    client_id: str | None = None
    allowed_ips: list[str] | None = Field(
        default=None,
        description="The token's IP allowlist (CIDRs), when it has one: refuse requests from other client addresses.",
    )
    tenant_external_id: str | None = None
    user_external_id: str | None = None

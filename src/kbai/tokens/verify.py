"""Verification: a presented string in, an explicit :class:`Outcome` out, checks in a fixed order.

1. format (a malformed string never reaches storage), 2. lookup by SHA-256 digest,
3. revoked, expired, paused, owner inactive, 4. the IP allowlist (when the caller gives the client
address), 5. scopes: effective = token scopes ∩ owner's permissions now (for a service token: ∩ the tenant's ceiling).
Nothing here raises for a bad token, and nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from kbai.tokenformat import digest, is_well_formed
from kbai.tokens.restrictions import Network, RateLimit, ip_allowed


class Outcome(StrEnum):
    VALID = "valid"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    OWNER_INACTIVE = "owner_inactive"
    PAUSED = "paused"
    IP_NOT_ALLOWED = "ip_not_allowed"
    INSUFFICIENT_SCOPE = "insufficient_scope"


@dataclass(frozen=True)
class TokenRecord:
    """What verification needs to know about a stored token and its owner (safe to cache)."""

    token_id: int
    tenant_id: int
    tenant_name: str
    # The membership that owns the token (it acts only in that membership's tenant); None: a service token.
    user_id: int | None
    email: str
    prefix: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    owner_active: bool
    owner_permissions: frozenset[str]
    tenant_external_id: str | None = None
    paused: bool = False
    # Parsed once at load (kbai.tokens.restrictions); None: any address.
    allowed_networks: tuple[Network, ...] | None = None
    allowed_ips: tuple[str, ...] | None = None
    # Stopped by a rotation (its successor took over): a later use of it is a reuse to alert on.
    rotated_out: bool = False
    person_id: int = 0  # who the owner is across tenants: X-Kbai-User, introspection's sub, /api/v1/me's user.id
    user_external_id: str | None = None  # the membership's external id (the product's id of the person there)
    # Owned by the tenant, not a person: no user, email or person id; owner_permissions is the tenant's ceiling.
    service: bool = False
    # The answer to a request that demands no scope and passes every check, built once per record (a record
    # never changes: anything that changes about the token loads a new one), not on every request.
    valid: Verification = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "valid", Verification(Outcome.VALID, self, self.scopes & self.owner_permissions))

    # Its own limits (kbai.tokens.limits counts them): None, or a rate limit; a quota (how much is left is
    # counted, never cached here) with its refill interval and the version of its setting.
    rate_limit: RateLimit | None = None
    quota: bool = False
    quota_refill: str | None = None
    quota_version: int = 0

    @property
    def limited(self) -> bool:
        return self.rate_limit is not None or self.quota


@dataclass(frozen=True)
class Verification:
    outcome: Outcome
    record: TokenRecord | None = None
    scopes: frozenset[str] = frozenset()
    missing: tuple[str, ...] = ()
    # Set by the caller that counted this use against the token's quota: what is left after it.
    quota_remaining: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.VALID

    @property
    def authenticated(self) -> bool:
        """The token itself is good (it may still lack a scope the caller demanded)."""
        return self.outcome in (Outcome.VALID, Outcome.INSUFFICIENT_SCOPE)


Lookup = Callable[[str], TokenRecord | None]


def verify(
    presented: object, lookup: Lookup, now: datetime, required: Iterable[str] = (), client_ip: str | None = None
) -> Verification:
    """``client_ip`` None: the caller enforces the allowlist itself (introspection reports it to the
    gateway; the SDK checks it against its own client); every kbai route gives the address."""
    if not is_well_formed(presented):
        return Verification(Outcome.MALFORMED)
    assert isinstance(presented, str)
    record = lookup(digest(presented))
    if record is None:
        return Verification(Outcome.UNKNOWN)
    if record.revoked_at is not None and record.revoked_at <= now:
        return Verification(Outcome.REVOKED, record)
    if record.expires_at is not None and record.expires_at <= now:
        return Verification(Outcome.EXPIRED, record)
    if record.paused:
        return Verification(Outcome.PAUSED, record)
    if not record.owner_active:
        return Verification(Outcome.OWNER_INACTIVE, record)
    if (
        client_ip is not None
        and record.allowed_networks is not None
        and not ip_allowed(record.allowed_networks, client_ip)
    ):
        return Verification(Outcome.IP_NOT_ALLOWED, record)
    valid = record.valid
    if not required:  # most checks demand no scope: the answer is the record's own
        return valid
    effective = valid.scopes
    missing = tuple(s for s in dict.fromkeys(required) if s not in effective)
    if missing:
        return Verification(Outcome.INSUFFICIENT_SCOPE, record, effective, missing)
    return valid

"""Tables. Every time column is UTC, second-precise; the token itself is never stored, only its digest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column
from sqlalchemy.sql.expression import false


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (portable across SQLite and PostgreSQL), returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (Index("uq_tenants_external_id", "external_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_active_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The host product's id of this organisation (e.g. the OIDC tenant claim); unique when set.
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Service tokens (owned by the tenant): at most this many active (None: KBAI_DEFAULT_MAX_SERVICE_TOKENS),
    # and the permissions they may act with (None: the default ceiling, each token's own scopes).
    max_service_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    service_token_ceiling: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class Person(Base):
    """One person: one email (stored lower-cased, so unique case-insensitively), at most one password, any
    number of OIDC identities, and a membership (``users`` row) in each tenant they belong to."""

    __tablename__ = "persons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    # None: no password (signs in through the product's OpenID provider, or has not accepted an invitation).
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The tenant of the membership used last: where a login without a tenant lands.
    last_tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="SET NULL"), nullable=True)


class User(Base):
    """A membership: a person in one tenant, with roles, an active flag, an external id and a token limit.

    The table keeps its old name and ids (``/api/v1/users[].id`` are membership ids); the person's id is
    what ``X-Kbai-User`` carries."""

    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_tenant_external_id", "tenant_id", "external_id", unique=True),
        UniqueConstraint("tenant_id", "person_id", name="uq_users_tenant_person"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    max_active_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The host product's id of this person in this tenant; unique per tenant when set.
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The person's email, read through (it lives on the person): queries may filter and select on it. It is a
    # correlated subquery, so a query must have ``users`` in its FROM: ``select(User.email)`` alone would not
    # correlate (write ``select(Person.email)``, or ``.select_from(User)``).
    email: Mapped[str] = column_property(
        select(Person.email).where(Person.id == person_id).correlate_except(Person).scalar_subquery()
    )


class Identity(Base):
    """An OpenID Connect identity (issuer, subject) linked to a person: who a sign-in is, never by email."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_identities_issuer_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Invitation(Base):
    """A one-time link (72 h) to a new membership: a new person sets a password there, an existing one
    confirms with their own login. Only the link's SHA-256 digest is stored."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Role(Base):
    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_roles_tenant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # "admin" or "member" for the built-in roles, None for the tenant's own.
    builtin: Mapped[str | None] = mapped_column(String(20), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RolePermission(Base):
    __tablename__ = "role_permissions"

    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    permission: Mapped[str] = mapped_column(String(100), primary_key=True)


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True)


class Token(Base):
    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_user_created", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    # The membership that owns the token; None: a service token, owned by the tenant.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # Who created a service token (or owned it before a hand-over): for audit and display only.
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A revoked_at in the future is a scheduled revocation (rotation grace period).
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rotated_from_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"), nullable=True)
    # Where the last use came from (written with last_used_at by the usage buffer; None when unknown).
    last_used_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_used_user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # Paused: refused like a revoked token, but its owner or an admin can resume it (revoked stays final).
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # CIDR strings the token may be used from; None: anywhere.
    allowed_ips: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # May call POST /api/v1/tokens/self/rotate with itself.
    self_rotate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Requests refused by a restriction (the allowlist), written in batches by the usage buffer.
    refused_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_refused_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_refused_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # When the owner was told that this token, rotated out, was used again (once per token).
    reuse_alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Its own rate limit: at most rate_limit_requests per rate_limit_per ("second", "minute", "hour"); None: none.
    rate_limit_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rate_limit_per: Mapped[str | None] = mapped_column(String(10), nullable=True)
    # Its quota (None: none). quota_remaining is what no instance has taken yet (kbai.tokens.limits takes
    # small shares ahead of need); quota_total is the amount it started the period with (for the 10 % alert).
    quota_remaining: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_refill_amount: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_refill_interval: Mapped[str | None] = mapped_column(String(10), nullable=True)
    # The refill period (UTC day or month) quota_remaining belongs to; None without a refill.
    quota_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the "below 10 %" alert went out in this period (cleared by a refill or a new quota).
    quota_low_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Bumped whenever the quota is set anew, so every instance drops the shares it took of the old one.
    quota_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TokenUsageHour(Base):
    """Requests per token per UTC hour, flushed in batches by the usage buffer (for activity views)."""

    __tablename__ = "token_usage_hourly"

    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer)


class AuditEvent(Base):
    """Append-only: triggers on both backends refuse UPDATE and DELETE."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_tenant_id", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    actor_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(50))
    target_type: Mapped[str] = mapped_column(String(30))
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class LoginSession(Base):
    """Server-side sessions: the cookie holds a random id; only its digest is stored."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # One-time message for the next page (kbai.access.sessions): AES-GCM under a key derived from the cookie.
    flash: Mapped[str | None] = mapped_column(Text, nullable=True)


class ServiceCredential(Base):
    """Operator-issued client id + secret for RFC 7662 introspection; the secret is stored as a digest."""

    __tablename__ = "service_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # What it may do, comma-separated (kbai.access.credentials.ABILITIES); credentials made before abilities
    # existed introspect and nothing more.
    abilities: Mapped[str] = mapped_column(String(200), default="introspect", server_default="introspect")


class ProvisioningCredential(Base):
    """A tenant's SCIM provisioning credential (``kbai_scim_...``): only its SHA-256 digest is stored."""

    __tablename__ = "provisioning_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(254), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScimUser(Base):
    """What an identity provider said about a membership over SCIM beyond kbai's own fields: its userName
    (unique per tenant, case-insensitive), externalId and the rest of the User resource, as sent."""

    __tablename__ = "scim_users"
    __table_args__ = (UniqueConstraint("tenant_id", "user_name_key", name="uq_scim_users_tenant_user_name"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_name: Mapped[str] = mapped_column(String(254))
    user_name_key: Mapped[str] = mapped_column(String(254))
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # DELETE /scim/v2/Users/{id} deactivates the membership and hides the resource (RFC 7644 §3.6: it is
    # gone for SCIM); a later POST of the same userName brings the membership back.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScimGroup(Base):
    """A role's SCIM Group attributes that kbai has no column for (its externalId)."""

    __tablename__ = "scim_groups"

    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AdminRequest(Base):
    """An "Ask an admin" request from a user who lacks a permission."""

    __tablename__ = "admin_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    permission: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class Notification(Base):
    """An in-app message for one user (e.g. "your token was found in public and revoked")."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(50))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TenantPolicy(Base):
    """A tenant's token rules (lifetime, expiration, auto-revoke) and its webhook. No row: no rules."""

    __tablename__ = "tenant_policies"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    max_lifetime_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expiration_required: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_revoke_unused_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Every new token must carry an IP allowlist.
    require_allowlist: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    webhook_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    # Not a digest (every event is signed with it) but Fernet-encrypted under a key kept outside the
    # database (kbai.secretbox): the clear secret is never stored.
    webhook_secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TokenRateWindow(Base):
    """Requests granted to the instances in one rate-limit window of a token (shares taken ahead of need)."""

    __tablename__ = "token_rate_windows"

    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    granted: Mapped[int] = mapped_column(Integer)


class TokenReminder(Base):
    """A claimed reminder: the row makes each (token, kind, channel) be queued exactly once."""

    __tablename__ = "token_reminders"

    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(30), primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IdempotencyRecord(Base):
    """A remembered ``Idempotency-Key``: the first answer of a create, replayed for 24 h to the same caller.

    ``status`` is None while the first request is still running (the claim). ``body`` never holds a
    secret: the plaintext token (and any password) is removed before it is stored.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("principal", "route", "key", name="uq_idempotency_principal_route_key"),
        Index("ix_idempotency_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Who: "user:<id>" for a session, "token:<id>" for an API token, "<kind>:<name>" for other callers.
    principal: Mapped[str] = mapped_column(String(120))
    # Which operation: "POST /api/v1/tokens/{token_id}/rotate" (the route, not the concrete path).
    route: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 hex of the path parameters and the canonical JSON body (secret fields left out).
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Which request holds the claim (a random id): a request that took over an abandoned claim wins.
    claim: Mapped[str] = mapped_column(String(32))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxMessage(Base):
    """A webhook event or an email to send, written in the transaction of the change it reports and sent
    after that commit (kbai.delivery.outbox). ``event_id`` is stable across attempts: ``webhook-id`` / ``Message-ID``."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "sent_at", "failed_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), unique=True)
    channel: Mapped[str] = mapped_column(String(10))  # "webhook" or "email"
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    event_type: Mapped[str] = mapped_column(String(50))
    recipient: Mapped[str | None] = mapped_column(String(320), nullable=True)  # emails only
    subject: Mapped[str | None] = mapped_column(String(200), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # webhook: the event's data; email: {"body": ...}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # While a sender holds it: another process leaves it alone until then (a crashed sender's lease runs out).
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # gave up
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)


class BusMessage(Base):
    """A cache invalidation or a failure-limiter block, for every other process on this database to read.

    SQLite has no server to push messages, so each process polls for rows newer than the last it saw
    (``kbai.cache.bus.DatabaseBus``); AUTOINCREMENT keeps ids rising even after old rows are pruned.
    PostgreSQL uses LISTEN/NOTIFY instead and leaves this table empty.
    """

    __tablename__ = "bus_messages"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

"""Statements of the hot path, built once at import so that a call only binds parameters.

SQLAlchemy caches the compiled form per engine, and psycopg prepares a statement on the server
once a connection has run it a few times, so a cold verification pays for parsing and planning once.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select

from kbai.store.models import Person, Role, RolePermission, Tenant, Token, User, UserRole

# Everything verification needs about one token, in one statement: the token, its owner (the membership
# and its person, none for a service token), the tenant's name and service-token ceiling, and one row per (role kind, permission) the owner holds now. A token without any
# role gives one row with NULL role columns; an unknown digest gives none.
TOKEN_RECORD = (
    select(
        Token.id,
        Token.tenant_id,
        Tenant.name,
        User.id,
        Person.email,
        Token.prefix,
        Token.name,
        Token.scopes,
        Token.created_at,
        Token.expires_at,
        Token.revoked_at,
        User.active,
        Role.builtin,
        RolePermission.permission,
        Tenant.external_id,
        Token.paused_at,
        Token.allowed_ips,
        Token.revoked_by,
        Person.id,
        User.external_id,
        Tenant.service_token_ceiling,
        Token.rate_limit_requests,
        Token.rate_limit_per,
        Token.quota_total,
        Token.quota_refill_interval,
        Token.quota_version,
    )
    # A service token has no owner: its user and person columns are NULL, and the tenant's ceiling bounds it.
    .outerjoin(User, User.id == Token.user_id)
    .outerjoin(Person, Person.id == User.person_id)
    .join(Tenant, Tenant.id == Token.tenant_id)
    .outerjoin(UserRole, UserRole.user_id == User.id)
    .outerjoin(Role, Role.id == UserRole.role_id)
    .outerjoin(RolePermission, RolePermission.role_id == Role.id)
    .where(Token.digest == bindparam("digest"))
)

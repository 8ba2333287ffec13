"""Statements of the hot path, built once at import so that a call only binds parameters.

``Database.read_once`` compiles each one once per engine (``kbai.store.db.DirectRead``), and psycopg
prepares a statement on the server once a connection has run it a few times, so a cold verification
pays for compiling, parsing and planning once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, bindparam, case, literal_column, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from kbai.store.models import Person, Role, RolePermission, Tenant, Token, User, UserRole

ADMIN_MARK = "*"  # in HELD: the owner holds the built-in Admin role (every permission)
HELD_SEPARATOR = " "  # never inside a permission key (kbai.access.catalog.KEY_RE)


class _space_separated(FunctionElement[str]):
    """The non-NULL values of a group joined by one space: ``string_agg`` on PostgreSQL, ``group_concat``
    on SQLite (SQLAlchemy's ``aggregate_strings`` sends the separator as a parameter rendered at execution)."""

    type = String()
    name = "space_separated"
    inherit_cache = True


@compiles(_space_separated)
def _string_agg(element: _space_separated, compiler: Any, **kw: Any) -> str:
    return f"string_agg({compiler.process(element.clauses, **kw)}, '{HELD_SEPARATOR}')"


@compiles(_space_separated, "sqlite")
def _group_concat(element: _space_separated, compiler: Any, **kw: Any) -> str:
    return f"group_concat({compiler.process(element.clauses, **kw)}, '{HELD_SEPARATOR}')"


# What the owner's roles grant now, as one value: each permission their roles list, and ADMIN_MARK for
# the built-in Admin role ('admin': kbai.access.service.ADMIN, a layer above this one), joined by
# HELD_SEPARATOR; NULL for no role at all (and for a service token).
HELD = (
    select(
        _space_separated(
            case(
                (Role.builtin == literal_column("'admin'"), literal_column(f"'{ADMIN_MARK}'")),
                else_=RolePermission.permission,
            )
        )
    )
    .select_from(UserRole)
    .join(Role, Role.id == UserRole.role_id)
    .outerjoin(RolePermission, RolePermission.role_id == Role.id)
    .where(UserRole.user_id == User.id)
    .correlate(User)
    .scalar_subquery()
)

# Everything verification needs about one token, in one statement and one row: the token, its owner
# (the membership and its person, none for a service token), the tenant's name and service-token
# ceiling, and what the owner's roles grant now (HELD). An unknown digest gives no row.
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
        HELD,
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
    .where(Token.digest == bindparam("digest"))
)

"""The schema: migrations apply on both backends, the audit log is append-only at the database level."""

import pytest
from sqlalchemy import delete, inspect, select, update
from sqlalchemy.exc import DatabaseError

from kbai.store import Database
from kbai.store.models import AuditEvent
from tests.conftest import World


def test_migrations_create_every_table(world: World) -> None:
    tables = set(inspect(world.services.db.engine).get_table_names())
    assert {
        "tenants",
        "users",
        "roles",
        "role_permissions",
        "user_roles",
        "tokens",
        "audit_events",
        "sessions",
        "service_credentials",
        "alembic_version",
    } <= tables


def test_upgrade_is_idempotent(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    db.upgrade()
    db.dispose()


def test_token_digest_is_unique(world: World) -> None:
    indexes = inspect(world.services.db.engine).get_indexes("tokens")
    uniques = inspect(world.services.db.engine).get_unique_constraints("tokens")
    unique_cols = [i["column_names"] for i in indexes if i.get("unique")] + [u["column_names"] for u in uniques]
    assert ["digest"] in unique_cols


@pytest.mark.parametrize("statement", ["update", "delete"])
def test_audit_log_refuses_update_and_delete(world: World, statement: str) -> None:
    db = world.services.db
    with db.read() as s:
        assert s.scalar(select(AuditEvent.id).limit(1)) is not None
    with pytest.raises(DatabaseError, match="append-only"), db.write() as s:
        if statement == "update":
            s.execute(update(AuditEvent).values(action="token.create"))
        else:
            s.execute(delete(AuditEvent))

"""Migration 0009 (OIDC identities, external ids) on a database with data in it, both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from kbai.store import Database
from kbai.store.db import MIGRATIONS
from tests.conftest import PG_ADMIN_URL, _pg_admin, _pg_url, missing_service


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/kbai.db"
        return
    name = f"kbai_mig_{uuid.uuid4().hex[:12]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:  # no PostgreSQL here
        missing_service(f"PostgreSQL at {PG_ADMIN_URL}")
    yield _pg_url(name)
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alembic(db: Database, action: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def test_0009_keeps_every_row_and_adds_nullable_external_ids(empty_url: str) -> None:
    db = Database(empty_url)
    _alembic(db, "upgrade", "0004")
    with db.write_engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (1, 'Acme', '2026-01-01 00:00:00')"))
        conn.execute(
            text(
                "INSERT INTO users (id, tenant_id, email, password_hash, active, created_at) "
                "VALUES (1, 1, 'dev@acme.test', 'h', true, '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO roles (id, tenant_id, name, builtin, created_at) "
                "VALUES (1, 1, 'Admin', 'admin', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(text("INSERT INTO user_roles (user_id, role_id) VALUES (1, 1)"))
        conn.execute(
            text(
                "INSERT INTO sessions (digest, user_id, csrf_token, created_at, expires_at) "
                "VALUES ('d', 1, 'c', '2026-01-01 00:00:00', '2027-01-01 00:00:00')"
            )
        )
    _alembic(db, "upgrade", "0009")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT name, external_id FROM tenants")).all() == [("Acme", None)]
        assert conn.execute(text("SELECT email, external_id FROM users")).all() == [("dev@acme.test", None)]
        conn.execute(
            text(
                "INSERT INTO identities (issuer, subject, user_id, created_at) "
                "VALUES ('https://id.example', 'sub-1', 1, '2026-01-01 00:00:00')"
            )
        )
        conn.rollback()
        kept = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("user_roles", "sessions")]
        assert kept == [1, 1]  # nothing cascaded away
    unique = {
        tuple(i["column_names"]) for t in ("users", "tenants") for i in inspect(db.engine).get_indexes(t) if i["unique"]
    }
    assert {("tenant_id", "external_id"), ("external_id",)} <= unique
    _alembic(db, "downgrade", "0004")
    assert "identities" not in inspect(db.engine).get_table_names()
    _alembic(db, "upgrade", "0009")
    with db.engine.connect() as conn:
        counts = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("users", "user_roles", "sessions")]
    assert counts == [1, 1, 1]
    db.dispose()

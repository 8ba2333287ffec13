"""Migration 0010 (persons; users become memberships) on a database with data in it, both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from kbai.store import Database
from kbai.store.db import MIGRATIONS, check_foreign_keys, sqlite_foreign_keys_off
from kbai.store.models import Base
from tests.conftest import PG_ADMIN_URL, _pg_admin, _pg_url, missing_service

T = "'2026-01-01 00:00:00'"


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/kbai.db"
        return
    name = f"kbai_mig_{uuid.uuid4().hex[:12]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except Exception:  # noqa: BLE001
        missing_service(f"PostgreSQL at {PG_ADMIN_URL}")
    yield _pg_url(name)
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alembic(db: Database, action: str, revision: str) -> None:
    """As ``Database.upgrade`` runs migrations: on SQLite with foreign keys off, every reference checked."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if db.is_sqlite:
        with sqlite_foreign_keys_off(db.write_engine) as conn, conn.begin():
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, revision)
            check_foreign_keys(conn)
        return
    with db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def _fill(db: Database) -> None:
    """Two tenants, three users (one OIDC-only), roles, tokens, a session, an identity, audit rows."""
    with db.write_engine.begin() as conn:
        for sql in (
            f"INSERT INTO tenants (id, name, created_at, external_id) VALUES (1, 'Acme', {T}, 'org_acme'), "
            f"(2, 'Globex', {T}, NULL)",
            "INSERT INTO users (id, tenant_id, email, password_hash, active, created_at, max_active_tokens, external_id) "
            f"VALUES (1, 1, 'admin@acme.test', 'hash-a', true, {T}, NULL, NULL), "
            f"(5, 1, 'dev@acme.test', '!oidc', true, {T}, 3, 'ext-dev'), "
            f"(7, 2, 'ops@globex.test', 'hash-g', false, {T}, NULL, NULL)",
            f"INSERT INTO roles (id, tenant_id, name, builtin, created_at) VALUES (1, 1, 'Admin', 'admin', {T}), "
            f"(2, 1, 'Member', 'member', {T}), (3, 2, 'Admin', 'admin', {T})",
            "INSERT INTO user_roles (user_id, role_id) VALUES (1, 1), (5, 2), (7, 3)",
            "INSERT INTO tokens (id, tenant_id, user_id, name, prefix, digest, scopes, created_at) VALUES "
            f"(1, 1, 5, 'cron', 'kbai_pk_aaaa', '{'a' * 64}', '[\"users.read\"]', {T}), "
            f"(2, 2, 7, 'zap', 'kbai_pk_bbbb', '{'b' * 64}', '[]', {T})",
            "INSERT INTO sessions (digest, user_id, csrf_token, created_at, expires_at) "
            f"VALUES ('d', 1, 'c', {T}, '2027-01-01 00:00:00')",
            "INSERT INTO identities (issuer, subject, user_id, created_at) "
            f"VALUES ('https://id.example', 'sub-dev', 5, {T})",
            "INSERT INTO audit_events (tenant_id, at, actor, actor_user_id, action, target_type, target_id, details) "
            f"VALUES (1, {T}, 'operator', NULL, 'user.create', 'user', '5', '{{}}'), "
            f"(2, {T}, 'user:ops@globex.test', 7, 'token.create', 'token', '2', '{{}}')",
        ):
            conn.execute(text(sql))


def _counts(db: Database) -> list[int]:
    with db.engine.connect() as conn:
        return [
            conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0
            for t in ("tenants", "users", "roles", "user_roles", "tokens", "sessions", "identities", "audit_events")
        ]


def test_0010_makes_each_user_one_person_with_the_same_id_and_one_membership(empty_url: str) -> None:
    db = Database(empty_url)
    _alembic(db, "upgrade", "0009")
    _fill(db)
    before = _counts(db)
    _alembic(db, "upgrade", "0010")
    assert _counts(db) == before  # every tenant, user, role, token, session, identity and audit entry kept
    with db.engine.connect() as conn:
        persons = conn.execute(text("SELECT id, email, password_hash, last_tenant_id FROM persons ORDER BY id")).all()
        assert [tuple(p) for p in persons] == [
            (1, "admin@acme.test", "hash-a", 1),
            (5, "dev@acme.test", None, 1),
            (7, "ops@globex.test", "hash-g", 2),
        ]
        members = conn.execute(
            text("SELECT id, tenant_id, person_id, active, max_active_tokens, external_id FROM users ORDER BY id")
        ).all()
        assert [tuple(m) for m in members] == [
            (1, 1, 1, True, None, None),
            (5, 1, 5, True, 3, "ext-dev"),
            (7, 2, 7, False, None, None),
        ]
        assert conn.execute(text("SELECT user_id FROM tokens ORDER BY id")).scalars().all() == [5, 7]
        assert conn.execute(text("SELECT person_id FROM identities")).scalars().all() == [5]
        assert conn.execute(text("SELECT user_id, role_id FROM user_roles ORDER BY user_id")).all() == [
            (1, 1),
            (5, 2),
            (7, 3),
        ]
        assert conn.execute(text("SELECT action FROM audit_events ORDER BY id")).scalars().all() == [
            "user.create",
            "token.create",
        ]
    with db.engine.connect() as conn:  # the models and the migrated schema agree on every table 0010 touches
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    touched = ("'users'", "'persons'", "'identities'", "'invitations'")
    assert [d for d in diff if any(t in repr(d) for t in touched)] == []
    columns = {c["name"] for c in inspect(db.engine).get_columns("users")}
    assert "email" not in columns and "password_hash" not in columns and "person_id" in columns
    # The same email may now be a member of another tenant, once per tenant; a new person gets a fresh id.
    with db.write_engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO users (id, tenant_id, person_id, active, created_at) VALUES (20, 2, 1, true, {T})")
        )
        conn.execute(text(f"INSERT INTO persons (email, created_at) VALUES ('new@x.test', {T})"))
        assert conn.execute(text("SELECT id FROM persons WHERE email = 'new@x.test'")).scalar() == 8
    with pytest.raises(Exception, match="(?i)unique.*(person|uq_users_tenant_person)"), db.write_engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO users (id, tenant_id, person_id, active, created_at) VALUES (22, 2, 1, true, {T})")
        )
    with pytest.raises(Exception, match="(?i)unique.*(email)"), db.write_engine.begin() as conn:
        conn.execute(text(f"INSERT INTO persons (email, created_at) VALUES ('dev@acme.test', {T})"))
    with pytest.raises(Exception, match="(?i)unique.*external_id"), db.write_engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO users (id, tenant_id, person_id, active, created_at, external_id) "
                f"VALUES (21, 1, 8, true, {T}, 'ext-dev')"
            )
        )
    db.dispose()


def test_0010_downgrades_a_database_of_one_membership_per_person(empty_url: str) -> None:
    db = Database(empty_url)
    _alembic(db, "upgrade", "0009")
    _fill(db)
    before = _counts(db)
    _alembic(db, "upgrade", "0010")
    _alembic(db, "downgrade", "0009")
    assert _counts(db) == before
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, email, password_hash FROM users ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [
            (1, "admin@acme.test", "hash-a"),
            (5, "dev@acme.test", "!oidc"),
            (7, "ops@globex.test", "hash-g"),
        ]
        assert conn.execute(text("SELECT user_id FROM identities")).scalars().all() == [5]
    assert "persons" not in inspect(db.engine).get_table_names()
    _alembic(db, "upgrade", "0010")
    assert _counts(db) == before
    # Two memberships of one person cannot go back to one email per user: refused, nothing changed.
    with db.write_engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO users (id, tenant_id, person_id, active, created_at) VALUES (20, 2, 1, true, {T})")
        )
    with pytest.raises(RuntimeError, match="several tenants"):
        _alembic(db, "downgrade", "0009")
    assert "persons" in inspect(db.engine).get_table_names()
    db.dispose()


def test_0010_refuses_to_run_on_sqlite_with_foreign_keys_on(tmp_path: Path) -> None:
    """The rebuild of users would cascade into roles, tokens and sessions: the migration stops instead."""
    db = Database(f"sqlite:///{tmp_path}/kbai.db")
    _alembic(db, "upgrade", "0009")
    _fill(db)
    before = _counts(db)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with pytest.raises(RuntimeError, match="foreign keys off"), db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0010")
    assert _counts(db) == before
    db.dispose()

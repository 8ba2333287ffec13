"""Migration 0005 on both backends: webhook secrets that 0004 stored in clear come out encrypted (the clear
column is gone, no dump holds them), with the operator's key or, on SQLite without one, a 0600 key file
beside the database; on PostgreSQL without a key the upgrade stops with one line saying what to set and
changes nothing. Each delivery then still verifies with the receiver's old secret."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from cryptography.fernet import Fernet
from sqlalchemy import inspect, text

from kbai.store import Database
from kbai.store.db import MIGRATIONS
from kbai.store.models import Base
from tests.conftest import KBAI_BIN, TEST_ENCRYPTION_KEY, _pg_admin, _pg_url, missing_service, server_env

OLD_SECRET = "kbai_whsec_" + "5e" * 32


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all (not the migrated template)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"kbai_mig_{uuid.uuid4().hex[:12]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:  # no PostgreSQL here
        missing_service("PostgreSQL")
    try:
        yield _pg_url(name)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _at_0004_with_a_clear_secret(url: str) -> None:
    db = Database(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    with db.write_engine.begin() as conn:
        now = datetime(2026, 1, 1, 12)
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (1, 'Acme', :now)"), {"now": now})
        conn.execute(
            text(
                "INSERT INTO tenant_policies (tenant_id, expiration_required, webhook_url, webhook_secret, "
                "updated_at) VALUES (1, false, 'https://hooks.example.com/kbai', :s, :now)"
            ),
            {"s": OLD_SECRET, "now": now},
        )
    db.dispose()


def _upgrade(url: str, key: str | None) -> subprocess.CompletedProcess[str]:
    env = server_env(url)
    env.pop("KBAI_ENCRYPTION_KEY", None)
    if key:
        env["KBAI_ENCRYPTION_KEY"] = key
    return subprocess.run([KBAI_BIN, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)


def _dump(db: Database) -> str:
    lines = []
    with db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            lines += [f"{table}: {tuple(row)!r}" for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    return "\n".join(lines)


def test_finding15_migration_0005_encrypts_the_secrets_0004_kept_in_clear(empty_url: str, backend: str) -> None:
    _at_0004_with_a_clear_secret(empty_url)
    key = TEST_ENCRYPTION_KEY if backend == "postgres" else None  # SQLite: the key file default
    done = _upgrade(empty_url, key)
    assert done.returncode == 0, done.stderr
    db = Database(empty_url)
    try:
        columns = {c["name"] for c in inspect(db.engine).get_columns("tenant_policies")}
        assert "webhook_secret" not in columns and "webhook_secret_encrypted" in columns
        with db.engine.connect() as conn:
            sealed = conn.execute(text("SELECT webhook_secret_encrypted FROM tenant_policies")).scalar_one()
        assert OLD_SECRET[11:] not in _dump(db) and OLD_SECRET[11:30] not in _dump(db)
        if key is None:
            key_file = Path(empty_url.removeprefix("sqlite:///") + ".key")
            assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
            key = key_file.read_text().strip()
        assert Fernet(key.encode()).decrypt(sealed.encode()).decode() == OLD_SECRET
        # The models and the migrated schema agree (nothing left for autogenerate to add or drop).
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if "outbox" in repr(d) or "tenant_policies" in repr(d)] == []
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["postgres"])
def test_finding15_without_a_key_postgresql_stops_the_upgrade_and_changes_nothing(empty_url: str) -> None:
    _at_0004_with_a_clear_secret(empty_url)
    done = _upgrade(empty_url, None)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "KBAI_ENCRYPTION_KEY" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    db = Database(empty_url)
    try:
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0004"
            assert conn.execute(text("SELECT webhook_secret FROM tenant_policies")).scalar_one() == OLD_SECRET
    finally:
        db.dispose()
    # With the key the same upgrade goes through.
    assert _upgrade(empty_url, TEST_ENCRYPTION_KEY).returncode == 0

"""Several processes migrate one fresh database at the same moment (N `kbai serve` processes starting
together): every one succeeds, the schema ends at head exactly once, and it works afterwards.

PostgreSQL serializes them with an advisory lock held for the migration's transaction; SQLite with the
write lock of ``BEGIN IMMEDIATE``. Without the lock, three of four PostgreSQL migrations fail (tried:
IntegrityError, duplicate key in the catalog, as each creates the same tables).
"""

from __future__ import annotations

import multiprocessing
import queue
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from kbai.store import Database
from kbai.store.db import MIGRATIONS
from kbai.store.models import Base
from tests.conftest import PG_ADMIN_URL, _pg_admin, _pg_url, missing_service
from tests.store import _migrate_worker

PROCESSES = 4


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: no tables at all, not even alembic_version."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"kbai_mig_{uuid.uuid4().hex[:12]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        missing_service(f"PostgreSQL at {PG_ADMIN_URL}")
    try:
        yield _pg_url(name)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def test_processes_migrating_one_fresh_database_at_once_all_succeed(fresh_url: str) -> None:
    db = Database(fresh_url)
    try:
        assert inspect(db.engine).get_table_names() == []
    finally:
        db.dispose()

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_migrate_worker.upgrade, args=(fresh_url, f"p{i}", barrier, results))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    outcomes: dict[str, str] = {}
    try:
        for _ in procs:
            name, outcome = results.get(timeout=180)
            outcomes[name] = outcome
    except queue.Empty:
        pass
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
    assert outcomes == {f"p{i}": "ok" for i in range(PROCESSES)}
    assert all(p.exitcode == 0 for p in procs)

    db = Database(fresh_url)
    try:
        with db.engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            tables = set(inspect(conn).get_table_names())
        assert versions == [head_revision()]  # one row: at head, once
        assert {t.name for t in Base.metadata.sorted_tables} <= tables
        db.upgrade()  # and one more start is a no-op
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == versions
    finally:
        db.dispose()

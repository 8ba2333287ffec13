"""Issue 13, finding 15: the SQLite database holds password hashes, token digests and webhook secrets,
so kbai creates it readable by its owner only (0600), and so are the -wal and -shm files beside it,
whatever the umask. SQLite only (PostgreSQL keeps its own files)."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from kbai.store import Database
from tests.conftest import KBAI_BIN, server_env


@pytest.fixture
def everyday_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default, under which SQLite itself would create 0644
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_finding15_sqlite_database_wal_and_shm_are_created_0600(tmp_path: Path, everyday_umask: None) -> None:
    path = tmp_path / "kbai.db"
    db = Database(f"sqlite:///{path}")
    try:
        db.upgrade()
        with db.engine.connect() as conn:  # an open connection keeps -wal and -shm in place
            conn.execute(text("SELECT count(*) FROM users")).scalar()
            with db.write() as s:
                s.execute(text("INSERT INTO tenants (name, created_at) VALUES ('Acme', '2026-01-01 00:00:00')"))
            files = {p.name: _mode(p) for p in tmp_path.iterdir()}
    finally:
        db.dispose()
    assert files == {"kbai.db": 0o600, "kbai.db-wal": 0o600, "kbai.db-shm": 0o600}


def test_finding15_kbai_db_upgrade_creates_the_file_0600(tmp_path: Path, everyday_umask: None) -> None:
    path = tmp_path / "fresh.db"
    done = subprocess.run(
        [KBAI_BIN, "db", "upgrade"], env=server_env(f"sqlite:///{path}"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert _mode(path) == 0o600


def test_finding15_an_existing_file_keeps_the_operators_mode(tmp_path: Path, everyday_umask: None) -> None:
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)  # e.g. readable by a backup group, on purpose
    db = Database(f"sqlite:///{path}")
    try:
        db.upgrade()
    finally:
        db.dispose()
    assert _mode(path) == 0o640

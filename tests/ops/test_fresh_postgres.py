"""The fresh-Debian proof: PostgreSQL as Debian installs it (peer on the local socket, scram-sha-256
over TCP, no trust anywhere) is enough for the test suite. This test makes such a server itself with
``pg_createcluster`` on a spare port, runs scripts/test-postgres.sh (what scripts/test.sh runs) against
it, and runs PostgreSQL-backed tests through the URL it prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import free_port, missing_service

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-postgres.sh"
# Debian's pg_hba.conf for a new cluster, without its comments (postgresql-common's defaults).
PG_HBA = """\
local   all             postgres                                peer
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     peer
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""
pytestmark = pytest.mark.postgres


@pytest.fixture
def scram_cluster() -> Iterator[int]:
    """A new PostgreSQL cluster on a free port with Debian's default authentication; dropped after."""
    if os.geteuid() != 0 or shutil.which("pg_createcluster") is None:
        missing_service("pg_createcluster run as root (Debian's postgresql-common)")
    version = sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]
    name, port = f"kbai_proof_{uuid.uuid4().hex[:8]}", free_port()
    subprocess.run(
        ["pg_createcluster", version, name, "-p", str(port), "--", "--auth-local=peer", "--auth-host=scram-sha-256"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        hba = Path(f"/etc/postgresql/{version}/{name}/pg_hba.conf")
        hba.write_text(PG_HBA)
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield port
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, timeout=120)


def _setup(port: int, password_file: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KBAI_", "PG"))}
    env.update(KBAI_TEST_PG_PORT=str(port), KBAI_TEST_PG_PASSWORD_FILE=str(password_file))
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_test_setup_works_on_debians_default_postgresql(scram_cluster: int, tmp_path: Path) -> None:
    port = scram_cluster
    hba = [line for line in PG_HBA.splitlines() if line.strip()]
    assert not [line for line in hba if "trust" in line] and all(
        line.split()[-1] in ("peer", "scram-sha-256") for line in hba
    )
    # As on a fresh Debian machine: nobody gets in over TCP without a password, postgres included.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=3).close()

    url = _setup(port, tmp_path / "pw")
    assert re.fullmatch(rf"postgresql://kbai_test:[0-9a-f]{{48}}@127\.0\.0\.1:{port}/postgres", url), "a new role"
    assert _setup(port, tmp_path / "pw") == url, "running it again changes nothing"
    with psycopg.connect(url, connect_timeout=3) as conn:
        method = conn.execute("SELECT rolcreatedb, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert method == (True, False), "may create databases, and nothing more"
    wrong = url.replace(url.split(":")[2].split("@")[0], "0" * 48)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(wrong, connect_timeout=3).close()

    # PostgreSQL-backed tests through that URL: template databases, one database per test, dropped
    # with FORCE, pg_dump with the password, the real CLI on PostgreSQL.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")}
    env.update(KBAI_TEST_PG_URL=url, KBAI_REQUIRE_SERVICES="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "-k",
            "postgres",
            "tests/store/test_no_plaintext.py",
            "tests/cli/test_cli.py::test_cli_flow",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert done.returncode == 0, done.stdout[-4000:]
    assert re.search(r"\b[2-9]\d* passed\b", summary) and "skipped" not in summary, summary
    assert url.split(":")[2].split("@")[0] not in done.stdout + done.stderr, "the password is never printed"

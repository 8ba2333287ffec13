"""Rule 4: storage holds a token's SHA-256 digest and display prefix, never the token.

After a flow that creates, uses, rotates and revokes tokens, a dump of the whole database (every
row of every table, every column, as text; for SQLite also the raw bytes of the database and its
WAL/SHM files; for PostgreSQL also ``pg_dump``) holds no plaintext token and no 64-hex secret part.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from kbai import tokenformat as fmt
from kbai.clock import FrozenClock
from kbai.services import Services
from kbai.store.models import Token
from tests.conftest import OPERATOR, World
from tests.tokens.helpers import assert_no_secret


def _flow(world: World, clock: FrozenClock) -> list[str]:
    """Create, use, rotate and revoke tokens; return every plaintext that was ever issued."""
    svc = world.services
    issued: list[str] = []
    a, plain_a = svc.tokens.create(world.dev, "Zapier production", ["users.read"], expires_in_days=90)
    b, plain_b = svc.tokens.create(world.dev, "n8n nightly sync", ["roles.read"])
    c, plain_c = svc.tokens.create(world.admin, "Local dev", ["audit.read", "users.read"], expires_at="2026-06-30")
    issued += [plain_a, plain_b, plain_c]
    for plaintext in issued:
        assert svc.tokens.verify(plaintext).ok
    svc.usage.record(a.id, clock.now())
    svc.usage.flush()
    clock.advance(hours=1)
    a2, plain_a2, _ = svc.tokens.rotate(world.dev, a.id, grace_period_seconds=600)
    _, plain_c2, _ = svc.tokens.rotate(world.admin, c.id)
    issued += [plain_a2, plain_c2]
    svc.tokens.revoke(world.dev, b.id)
    svc.tokens.revoke(OPERATOR, a2.id)
    d, plain_d = svc.tokens.create(world.dev, "never used", [])
    issued.append(plain_d)
    # Failed verifications of real tokens must not leave a trace either.
    for plaintext in issued:
        svc.tokens.verify(plaintext, ["developer.review_tokens"])
    svc.tokens.list(world.dev.user_id)
    return issued


def _sql_dump(svc: Services) -> str:
    """Every column of every row of every table, as text."""
    lines: list[str] = []
    with svc.db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                lines.append(f"{table}: " + " | ".join(f"{v!s} {v!r}" for v in row))
    return "\n".join(lines)


def _raw_files(svc: Services) -> bytes:
    url = make_url(svc.db.url)
    assert url.database
    path = Path(url.database)
    chunks = []
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        if candidate.exists():
            chunks.append(candidate.read_bytes())
    assert chunks, "the SQLite file was not found"
    return b"\n".join(chunks)


def _pg_dump(svc: Services) -> str:
    url = make_url(svc.settings.database_url)
    exe = shutil.which("pg_dump")
    assert exe, "pg_dump is needed to dump the PostgreSQL database"
    result = subprocess.run(
        [
            exe,
            "--no-owner",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            url.database or "",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PGPASSWORD": url.password or ""},  # a scram-sha-256 server (scripts/test-postgres.sh)
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_no_plaintext_token_anywhere_in_the_database(world: World, clock: FrozenClock, backend: str) -> None:
    svc = world.services
    issued = _flow(world, clock)
    assert len({fmt.digest(t) for t in issued}) == 6

    dumps: dict[str, str] = {"rows": _sql_dump(svc)}
    if backend == "sqlite":
        dumps["raw file bytes"] = _raw_files(svc).decode("latin-1")
    else:
        dumps["pg_dump"] = _pg_dump(svc)

    for what, dump in dumps.items():
        for plaintext in issued:
            assert_no_secret(plaintext, dump, what)
            assert_no_secret(plaintext[8:], dump, what)  # the 64-hex secret alone
            assert_no_secret(plaintext[8:].upper(), dump, what)
            assert_no_secret(plaintext[12:40], dump, what)  # nor a long piece of it
        # The dump really covers the tokens: every digest and display prefix is in it.
        for plaintext in issued:
            assert fmt.digest(plaintext) in dump, f"digest missing from the {what}"
            assert plaintext[:12] in dump, f"prefix missing from the {what}"


def test_the_digest_and_prefix_are_stored_instead(world: World, clock: FrozenClock) -> None:
    svc = world.services
    issued = _flow(world, clock)
    with svc.db.read() as s:
        rows = {t.digest: t for t in s.query(Token).all()}
    assert len(rows) == len(issued)
    for plaintext in issued:
        row = rows.get(fmt.digest(plaintext))
        assert row is not None, "no row holds the token's digest"
        assert row.prefix == plaintext[:12]
        assert len(row.digest) == 64
        stored = " ".join(str(getattr(row, c.key)) for c in Token.__table__.columns)
        assert_no_secret(plaintext[8:], stored, "token row")

"""Issue 3 / rule 9: Last used follows successful use, lags by at most the flush interval, and costs
one database write per token per flush, not one per request.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import event, select

from kbai.clock import FrozenClock
from kbai.services import Services
from kbai.store import Database
from kbai.store.models import Token
from kbai.tokens.usage import UsageBuffer
from tests.conftest import LiveServer, World, start_server
from tests.gateway.helpers import bearer, create_token, listed, login, seed

POLL_TIMEOUT = 30  # generous: only a bound on waiting, never a claim about speed


def parse_time(value: object) -> datetime:
    assert isinstance(value, str)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def poll(what: str, condition: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + POLL_TIMEOUT
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def metric(client: httpx.Client, name: str) -> float:
    r = client.get("/metrics")
    assert r.status_code == 200
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def db_last_used(database_url: str, token_id: int) -> datetime | None:
    db = Database(database_url)
    try:
        with db.read() as s:
            row = s.scalar(select(Token).where(Token.id == token_id))
            assert row is not None
            return row.last_used_at
    finally:
        db.dispose()


@pytest.fixture
def fast_flush_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    seed(database_url)
    server = start_server(database_url, tmp_path, KBAI_LAST_USED_FLUSH_SECONDS="0.3")
    yield server
    server.stop()


def test_last_used_changes_after_use(fast_flush_server: LiveServer) -> None:
    with fast_flush_server.client() as session, fast_flush_server.client() as anon:
        csrf = login(session)
        used = create_token(session, csrf, "used", ["users.read"])
        refused = create_token(session, csrf, "refused", ["users.read"])
        assert listed(session)[used.id]["last_used_at"] is None

        # A refused request (403: missing scope) is not a use; it happens before the successful one,
        # so it would land in the same flush or an earlier one.
        r = anon.get("/api/v1/roles", headers=bearer(refused.plaintext))
        assert r.status_code == 403
        r = anon.get("/api/v1/me", headers=bearer(used.plaintext))
        assert r.status_code == 200
        first = parse_time(poll("last_used_at to be set", lambda: listed(session)[used.id]["last_used_at"]))
        row = listed(session)[used.id]
        assert parse_time(row["created_at"]) <= first <= datetime.now(UTC) + timedelta(seconds=1)
        assert listed(session)[refused.id]["last_used_at"] is None

        # Times are stored to the second: once the server's clock has moved on, a new use moves it.
        poll("the next second", lambda: datetime.now(UTC).replace(microsecond=0) > first)
        r = anon.get("/api/v1/users", headers=bearer(used.plaintext))
        assert r.status_code == 200
        second = poll(
            "last_used_at to move on",
            lambda: (v := listed(session)[used.id]["last_used_at"]) and parse_time(v) > first and v,
        )
        assert parse_time(second) > first


def pg_tokens_updated(database_url: str) -> int:
    """Rows of the tokens table PostgreSQL has counted as updated (n_tup_upd), across all sessions."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'tokens'").fetchone()
    assert row is not None
    return int(row[0])


def test_a_thousand_requests_cost_no_write_until_the_flush(database_url: str, tmp_path: Path, backend: str) -> None:
    seed(database_url)
    server = start_server(database_url, tmp_path, KBAI_LAST_USED_FLUSH_SECONDS="3600")
    try:
        with server.client() as session, server.client() as anon:
            csrf = login(session)
            made = create_token(session, csrf, "busy integration", ["users.read"])
            started = datetime.now(UTC).replace(microsecond=0)
            statuses = [anon.get("/api/v1/me", headers=bearer(made.plaintext)).status_code for _ in range(1000)]
            assert statuses == [200] * 1000
            finished = datetime.now(UTC)
            assert metric(session, "kbai_last_used_writes_total") == 0
            assert metric(session, "kbai_last_used_flushes_total") == 0
            assert listed(session)[made.id]["last_used_at"] is None
        assert db_last_used(database_url, made.id) is None
    finally:
        code = server.stop()
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too.
    assert code in (0, -signal.SIGTERM), f"kbai serve exited with {code} on SIGTERM"
    assert "Traceback" not in server.log.read_text()

    # The shutdown flush wrote the buffered use: one row, with the latest time.
    stored = db_last_used(database_url, made.id)
    assert stored is not None, "the buffered use was lost on shutdown"
    assert started <= stored <= finished
    if backend == "postgres":
        # Counted by PostgreSQL itself: the 1,000 uses became exactly one UPDATEd row.
        assert poll("PostgreSQL to report the update", lambda: pg_tokens_updated(database_url) >= 1)
        assert pg_tokens_updated(database_url) == 1


@pytest.fixture
def statements(services: Services) -> Iterator[list[str]]:
    """Every SQL statement the services' engine executes while the test runs."""
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(services.db.engine, "before_cursor_execute", listener)
    yield seen
    event.remove(services.db.engine, "before_cursor_execute", listener)


def token_updates(statements: list[str]) -> list[str]:
    return [s for s in statements if s.upper().startswith("UPDATE TOKENS")]


def test_buffer_turns_a_thousand_uses_into_one_update(
    services: Services, world: World, clock: FrozenClock, statements: list[str]
) -> None:
    view, _ = services.tokens.create(world.dev, "busy", ["users.read"])
    other, _ = services.tokens.create(world.dev, "quiet", [])
    buffer = UsageBuffer(services.db, interval_seconds=3600)
    base = clock.now()
    statements.clear()
    for i in range(1000):
        # Out of order on purpose: the latest time must win, whatever order uses arrive in.
        buffer.record(view.id, base + timedelta(seconds=(i * 7919) % 1000))
    assert statements == [], "record() touched the database"
    assert buffer.pending() == 1

    assert buffer.flush() == 1
    assert len(token_updates(statements)) == 1
    assert buffer.pending() == 0
    stored = {v.id: v.last_used_at for v in services.tokens.list(world.dev.user_id)}  # type: ignore[arg-type]
    assert stored[view.id] == base + timedelta(seconds=999)
    assert stored[other.id] is None

    # Nothing buffered: nothing written.
    statements.clear()
    assert buffer.flush() == 0
    assert token_updates(statements) == []

    # An older use arriving late never moves Last used backwards.
    buffer.record(view.id, base)
    buffer.flush()
    stored = {v.id: v.last_used_at for v in services.tokens.list(world.dev.user_id)}  # type: ignore[arg-type]
    assert stored[view.id] == base + timedelta(seconds=999)


def test_buffer_writes_one_update_per_token_not_per_use(
    services: Services, world: World, clock: FrozenClock, statements: list[str]
) -> None:
    views = [services.tokens.create(world.dev, f"t{i}", [])[0] for i in range(3)]
    buffer = UsageBuffer(services.db, interval_seconds=3600)
    statements.clear()
    for i in range(300):
        buffer.record(views[i % 3].id, clock.now() + timedelta(seconds=i))
    assert buffer.flush() == 3
    assert len(token_updates(statements)) == 3

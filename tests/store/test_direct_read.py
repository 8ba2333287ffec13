"""The cold verification's statement on the driver's own cursor (kbai.store.db.DirectRead), on both backends.

It must answer exactly what SQLAlchemy's ``Connection.execute`` answers (same values, same Python types),
send one statement and nothing else to the database (counted by the driver itself: SQLite's trace
callback, libpq's protocol trace), stay out of the way of anything listening to SQLAlchemy's statement
events, recover from a connection the database dropped, and never hand a forked child its parent's
connections.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from psycopg.pq import Trace
from sqlalchemy import bindparam, event, literal, select, text

from kbai.services import Services
from kbai.store.db import DirectRead
from kbai.store.models import Token
from kbai.store.queries import TOKEN_RECORD
from kbai.tokenformat import digest
from tests.conftest import OPERATOR, World, give_dev_service_tokens


def through_sqlalchemy(services: Services, token_digest: str) -> list[tuple[Any, ...]]:
    with services.db.single_engine.connect() as conn:
        return [tuple(row) for row in conn.execute(TOKEN_RECORD, {"digest": token_digest}).all()]


def direct(services: Services, token_digest: str) -> list[tuple[Any, ...]]:
    rows = services.db.read_once(TOKEN_RECORD, {"digest": token_digest})
    return [tuple(row) for row in rows]


@pytest.fixture
def tokens(services: Services, world: World) -> dict[str, str]:
    """Plaintexts of tokens that fill every column TOKEN_RECORD reads in a different way."""
    svc = services
    give_dev_service_tokens(world)
    dev = world.actor("dev@acme.test")
    out: dict[str, str] = {}
    _, out["developer"] = svc.tokens.create(dev, "plain", ["users.read"])
    _, out["admin"] = svc.tokens.create(world.admin, "admin's", ["users.read", "audit.read"], expires_in_days=30)
    _, out["restricted"] = svc.tokens.create(
        dev,
        "restricted",
        ["roles.read"],
        allowed_ips=["10.0.0.0/8", "2001:db8::/32"],
        rate_limit={"requests": 100, "per": "minute"},
    )
    _, out["quota"] = svc.tokens.create(
        dev, "quota", ["users.read"], quota={"remaining": 1000, "refill": {"amount": 1000, "interval": "month"}}
    )
    view, out["revoked"] = svc.tokens.create(dev, "revoked", ["users.read"])
    svc.tokens.revoke(dev, view.id)
    view, out["paused"] = svc.tokens.create(dev, "paused", ["users.read"])
    svc.tokens.pause(dev, view.id)
    _, out["service"] = svc.tokens.create_service(dev, "nightly", ["users.read"])
    svc.tokens.set_ceiling(world.admin, ["users.read", "roles.read"])
    _, out["service under a ceiling"] = svc.tokens.create_service(dev, "ceiling", ["users.read"])
    # An owner with no role at all, and one deactivated since.
    lone, _ = svc.access.create_user(
        OPERATOR, world.tenant_id, "lone@acme.test", "lone-password-1", [world.dev_role_id]
    )
    _, out["no role"] = svc.tokens.create(world.actor("lone@acme.test"), "lone", ["users.read"])
    svc.access.set_user_roles(OPERATOR, lone.id, [])
    gone, _ = svc.access.create_user(
        OPERATOR, world.tenant_id, "gone@acme.test", "gone-password-1", [world.dev_role_id]
    )
    _, out["inactive owner"] = svc.tokens.create(world.actor("gone@acme.test"), "gone", ["users.read"])
    svc.access.deactivate_user(OPERATOR, gone.id)
    return out


def test_rows_are_what_sqlalchemy_returns(services: Services, tokens: dict[str, str]) -> None:
    for label, plaintext in tokens.items():
        d = digest(plaintext)
        expected = through_sqlalchemy(services, d)
        got = direct(services, d)
        assert len(got) == 1, label
        assert got == expected, label
        assert [type(v) for v in got[0]] == [type(v) for v in expected[0]], label
    assert direct(services, digest("kbai_pk_" + "0" * 64)) == []


def test_the_direct_path_is_the_one_taken(services: Services, tokens: dict[str, str]) -> None:
    """Without a statement listener, the statement never reaches SQLAlchemy's execution (and with one, it does)."""
    read = DirectRead(TOKEN_RECORD, services.db.single_engine)
    params = {"digest": digest(tokens["developer"])}
    try:
        assert read.fetch(params) == through_sqlalchemy(services, params["digest"])  # tuples, as the driver gives
        seen: list[str] = []

        def listener(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            seen.append(statement)

        event.listen(services.db.single_engine, "before_cursor_execute", listener)
        try:
            assert read.fetch(params) is None  # the caller must go through Connection.execute
            assert len(direct(services, params["digest"])) == 1
            assert len(seen) == 1 and "FROM tokens" in seen[0]
        finally:
            event.remove(services.db.single_engine, "before_cursor_execute", listener)
    finally:
        read.close()


@contextmanager
def statements_sent(services: Services) -> Iterator[list[str]]:
    """Every statement the driver sends on a connection made while the block runs, as the driver counts
    them: SQLite's own trace callback; on PostgreSQL libpq's protocol trace (each Query or Bind message
    the client sends is one statement executed)."""
    seen: list[str] = []
    traces: list[tuple[Any, Any]] = []
    engine = services.db.single_engine

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        if services.db.is_sqlite:
            dbapi_conn.set_trace_callback(seen.append)
        else:
            trace = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
            dbapi_conn.pgconn.trace(trace.fileno())
            dbapi_conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
            traces.append((dbapi_conn, trace))

    event.listen(engine, "connect", on_connect)
    services.db.dispose()  # every connection from here on is a new one, traced
    try:
        yield seen
    finally:
        event.remove(engine, "connect", on_connect)
        for dbapi_conn, trace in traces:
            if not dbapi_conn.closed:
                dbapi_conn.pgconn.untrace()
            trace.seek(0)
            for line in trace.read().decode("utf-8", "replace").splitlines():
                # "F	<length>	Query	"SQL"" or "F	<length>	Bind	..." (F: from the frontend, the client)
                if re.match(r"F\t\d+\t(Query|Bind)\t", line):
                    seen.append(line)
            trace.close()
        services.db.dispose()


def test_a_cold_verification_sends_one_statement(services: Services, tokens: dict[str, str]) -> None:
    """Counted by the driver, not by SQLAlchemy: the direct path is invisible to SQLAlchemy's statement events."""
    services.cache.clear()
    with statements_sent(services) as seen:
        assert services.tokens.verify(tokens["developer"]).ok
    assert len(seen) == 1, seen
    assert services.tokens.verify(tokens["developer"]).ok  # and the second time, a cache hit: nothing more
    with statements_sent(services) as seen:
        for _ in range(5):
            assert services.tokens.verify(tokens["developer"]).ok
    assert seen == []


def test_a_connection_the_database_dropped(services: Services, tokens: dict[str, str], backend: str) -> None:
    """The idle connections die (PostgreSQL ends them, as in a restart or a failover; a SQLite handle is
    closed under us): the next read still answers, through SQLAlchemy, and the dead connection is
    never used again."""
    d = digest(tokens["developer"])
    expected = through_sqlalchemy(services, d)
    assert direct(services, d) == expected  # a connection is now idle in the direct read
    read = services.db._direct[TOKEN_RECORD]
    dead = list(read._idle)
    assert dead
    if backend == "postgres":
        with services.db.engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            conn.commit()
    else:
        for conn in dead:
            conn.dbapi_connection.close()  # the driver's handle, under the pool's feet
    assert direct(services, d) == expected
    assert not any(conn in read._idle for conn in dead)
    for _ in range(3):
        assert direct(services, d) == expected
    assert read.fetch({"digest": d}) == expected  # healed: the direct path answers again


def test_a_forked_child_starts_without_its_parents_connections(services: Services, tokens: dict[str, str]) -> None:
    d = digest(tokens["developer"])
    expected = through_sqlalchemy(services, d)
    assert direct(services, d) == expected
    read = services.db._direct[TOKEN_RECORD]
    assert len(read._idle) == 1
    pid = os.fork()
    if pid == 0:  # the child: report by exit code only
        code = 0 if len(read._idle) == 0 else 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(read._idle) == 1  # the parent's connection is still the parent's
    assert direct(services, d) == expected


def test_dispose_closes_the_idle_connections(services: Services, tokens: dict[str, str]) -> None:
    d = digest(tokens["developer"])
    direct(services, d)
    read = services.db._direct[TOKEN_RECORD]
    idle = [conn.dbapi_connection for conn in read._idle]
    assert idle
    services.db.dispose()
    assert not read._idle
    for dbapi_conn in idle:
        with pytest.raises(services.db.single_engine.dialect.loaded_dbapi.Error):  # closed
            dbapi_conn.cursor().execute("SELECT 1")
    assert direct(services, d) == through_sqlalchemy(services, d)  # a new DirectRead, new connections


def test_threads_at_once(services: Services, tokens: dict[str, str]) -> None:
    """Eight threads reading at once (a server's thread pool on cold tokens): every answer right, and no more
    connections kept idle than allowed."""
    expected = {label: through_sqlalchemy(services, digest(t)) for label, t in tokens.items()}
    labels = list(tokens)
    wrong: list[str] = []

    def work(n: int) -> None:
        for i in range(40):
            label = labels[(n + i) % len(labels)]
            if direct(services, digest(tokens[label])) != expected[label]:
                wrong.append(label)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    read = services.db._direct[TOKEN_RECORD]
    assert 1 <= len(read._idle) <= read.keep


def test_only_parameters_that_need_no_processing(services: Services) -> None:
    with pytest.raises(ValueError, match="literal"):
        DirectRead(select(Token.id).where(Token.name == literal("x")), services.db.single_engine)
    with pytest.raises(ValueError, match="bind processor"):
        DirectRead(select(Token.id).where(Token.created_at > bindparam("t")), services.db.single_engine)

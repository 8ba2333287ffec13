"""Engine and sessions for SQLite (embedded default) and PostgreSQL (scale-out)."""

from __future__ import annotations

import os
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import Select

MIGRATIONS = Path(__file__).parent / "migrations"
# Any number of processes may start at once; the first to take this lock migrates, the rest wait.
_MIGRATION_LOCK_ID = 0x6B626169  # "kbai"


class DirectRead:
    """One SELECT compiled once for an engine's dialect and sent straight to the driver's cursor.

    What SQLAlchemy's ``Connection.execute`` and a pool checkout add around one call (an execution
    context, result metadata from the cursor description, row objects, a checkout, a reset and a
    checkin under locks) costs more than the query itself on SQLite. So the statement is compiled once
    and runs on connections of the engine's own pool that this object keeps checked out (at most
    ``keep`` idle here; the pool's size still bounds how many exist, and a checkout beyond them waits
    as any other would). Its rows are tuples whose values went through the result processors
    SQLAlchemy itself would apply (aware UTC times, JSON): a caller cannot tell the two paths apart
    (tests/store/test_direct_read.py compares them on both backends).

    :meth:`fetch` returns None, and the caller runs the statement through ``Connection.execute``,
    whenever SQLAlchemy would do more than call the driver: a listener on the statement events
    (instrumentation, the statement-counting tests) then sees it as usual, and a driver error is
    wrapped, classified and its connection invalidated by SQLAlchemy (the connection that failed here
    is invalidated too; the statement only reads, so running it a second time there is harmless).
    """

    def __init__(self, statement: Select[*tuple[Any, ...]], engine: Engine, *, keep: int = 5) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        for name, bind in compiled.binds.items():
            if not bind.required:
                raise ValueError(f"DirectRead takes every value as a parameter; {name!r} is a literal")
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                raise ValueError(f"DirectRead passes parameters as they are; {name!r} needs a bind processor")
        self.statement = statement
        self.engine = engine
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ()) if compiled.positional else None
        columns = statement.selected_columns
        processors = [col.type.dialect_impl(dialect).result_processor(dialect, None) for col in columns]
        self.processors: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
            (i, fn) for i, fn in enumerate(processors) if fn is not None
        )
        self._driver_error: type[Exception] = dialect.loaded_dbapi.Error  # the driver's own base class
        self.keep = keep
        self._idle: deque[PoolProxiedConnection] = deque()  # append and pop are atomic: no lock needed
        _DIRECT_READS.add(self)

    def fetch(self, params: dict[str, Any]) -> list[Sequence[Any]] | None:
        """The processed rows, or None where SQLAlchemy must run the statement (see the class)."""
        dispatch = self.engine.dispatch
        if dispatch.before_cursor_execute or dispatch.after_cursor_execute:
            return None
        args: Any = params if self.names is None else tuple(params[name] for name in self.names)
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self.engine.raw_connection()  # a pool checkout, with the engine's connect-time settings
        try:
            cursor = conn.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(self.sql, args)
                rows = cursor.fetchall()
            finally:
                cursor.close()
        except self._driver_error as exc:
            with suppress(Exception):
                conn.invalidate(exc)  # the pool replaces it; SQLAlchemy's path now reports what happened
                conn.close()
            return None
        if len(self._idle) < self.keep:
            self._idle.append(conn)
        else:
            conn.close()  # back to the pool
        processors = self.processors
        if not processors:
            return list(rows)
        out: list[Sequence[Any]] = []
        for row in rows:
            values = list(row)
            for i, fn in processors:
                values[i] = fn(values[i])
            out.append(tuple(values))
        return out

    def close(self) -> None:
        """Give the idle connections back to the pool (those in use go back when they are done)."""
        self.keep = 0
        while self._idle:
            with suppress(Exception):
                self._idle.pop().close()

    def forget(self) -> None:
        """In a forked child: drop the parent's connections without touching them (the parent uses them)."""
        self._idle.clear()


# Every DirectRead of this process, so that a forked child starts without its parent's connections.
_DIRECT_READS: weakref.WeakSet[DirectRead] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):

    def _forget_all() -> None:
        for read in list(_DIRECT_READS):
            read.forget()

    os.register_at_fork(after_in_child=_forget_all)


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3; SQLite URLs pass through."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class Database:
    """One engine per process. ``write()`` sessions are serialized where the rules need it."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self._head: str | None = None  # the newest migration this code ships (read once, see schema_revisions)
        self.is_sqlite = make_url(self.url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            _create_private(make_url(self.url).database)
            self.engine = create_engine(self.url, connect_args={"check_same_thread": False, "timeout": 30})
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(
                self.url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True, pool_timeout=60
            )
        # One-statement reads (a cold verification): autocommit, so the statement is the only round
        # trip (no BEGIN, no ROLLBACK), and no pre-ping on checkout; see read_once for dead connections.
        if self.is_sqlite:
            self.single_engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 30}, isolation_level="AUTOCOMMIT"
            )
            _configure_sqlite(self.single_engine, read_only=True)
        else:
            self.single_engine = create_engine(
                self.url, pool_size=5, max_overflow=10, pool_timeout=60, isolation_level="AUTOCOMMIT"
            )
        # On SQLite a write transaction takes the write lock at BEGIN, so "count, then insert"
        # can never interleave with another writer (rule 7). PostgreSQL uses row locks instead.
        self.write_engine = self.engine.execution_options(kbai_write=True)
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writer = sessionmaker(bind=self.write_engine, expire_on_commit=False)
        self._direct: dict[Select[*tuple[Any, ...]], DirectRead] = {}

    @property
    def sqlite_path(self) -> str | None:
        """The file of a SQLite database; None for PostgreSQL and for an in-memory database."""
        if not self.is_sqlite:
            return None
        database = make_url(self.url).database
        return database if database and database != ":memory:" else None

    @property
    def engines(self) -> tuple[Engine, Engine]:
        """Every engine (connection pool) of this database: sessions, and one-statement reads."""
        return self.engine, self.single_engine

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session that commits when the block ends and rolls back if it raises."""
        session = self._writer()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        session = self._reader()
        try:
            yield session
        finally:
            # close() ends the transaction without expiring what was loaded, so the
            # objects stay readable after the block.
            session.close()

    def read_once(self, statement: Select[*tuple[Any, ...]], params: dict[str, Any]) -> list[Sequence[Any]]:
        """The rows of one statement, run on its own outside any transaction (one round trip).

        A single statement sees one consistent snapshot on both databases. A pooled connection
        found dead (the database restarted) is discarded and the statement retried once on a new one.
        The statement is compiled once (:class:`DirectRead`) and sent straight to the driver: what
        SQLAlchemy's ``Connection.execute`` adds around one call (execution context, result metadata
        from the cursor description, row objects) costs more than the query itself on SQLite.
        """
        read = self._direct.get(statement)
        if read is None:
            read = self._direct[statement] = DirectRead(statement, self.single_engine)
        rows = read.fetch(params)
        if rows is not None:
            return rows
        for attempt in (1, 2):
            try:
                with self.single_engine.connect() as conn:
                    return list(conn.execute(statement, params).all())
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def upgrade(self) -> None:
        """Apply every pending Alembic migration (safe to call from many processes at once)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        if self.is_sqlite:
            with sqlite_foreign_keys_off(self.write_engine) as conn, conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                check_foreign_keys(conn)  # before the commit: a broken reference rolls everything back
            return
        with self.write_engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def schema_revisions(self) -> tuple[str | None, str | None]:
        """(the database's Alembic revision, the newest this code ships): equal when migrations are at head."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        if self._head is None:
            self._head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            conn.rollback()
        return current, self._head

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            conn.rollback()

    def dispose(self) -> None:
        for read in self._direct.values():
            read.close()
        self._direct.clear()
        self.engine.dispose()
        self.single_engine.dispose()


@contextmanager
def sqlite_foreign_keys_off(engine: Engine) -> Iterator[Connection]:
    """A SQLite connection with foreign keys off, for migrations that rebuild a table (a rebuild drops the
    old table, and with foreign keys on that would cascade into every table pointing at it).

    The switch only works outside a transaction, so it is set on the driver's connection before the first
    statement, and put back before the connection returns to the pool. Call :func:`check_foreign_keys` inside
    the transaction, before it commits.
    """
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            yield conn
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def check_foreign_keys(conn: Connection) -> None:
    """Refuse (roll back) a migration that left a reference to a missing row (SQLite, foreign keys off)."""
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"a migration left {len(broken)} broken references, first: {tuple(broken[0])}")


def _create_private(database: str | None) -> None:
    """Create the SQLite file readable by its owner only (0600), before SQLite would create it 0644.

    It holds password hashes, token digests and webhook secrets. SQLite gives the ``-wal`` and ``-shm``
    files it makes beside it the database file's own mode, so they are private too. An existing file
    keeps the mode the operator gave it.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # e.g. a missing folder: let SQLite report it in its own words
    os.close(fd)
    os.chmod(database, 0o600)  # whatever the umask left


def _configure_sqlite(engine: Engine, *, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if read_only:
            cur.execute("PRAGMA query_only=ON")
        cur.close()

    if read_only:  # autocommit: each statement is its own implicit transaction, no BEGIN
        return

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("kbai_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL, a frozen clock, services.

PostgreSQL tests create their own databases (from a migrated template, one per test) and drop them
afterwards, so runs never collide. When a service is missing the tests that need it skip, unless
KBAI_REQUIRE_SERVICES=1 (CI), where they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.services import Services
from kbai.store import Database
from kbai.store.audit import Actor

# Test-only variables (README, "Test-only variables"): KBAI_REQUIRE_SERVICES, KBAI_TEST_PG_URL (an
# account that may create databases; scripts/test.sh sets it, see scripts/test-postgres.sh),
# KBAI_TEST_REDIS_URL, KBAI_UPDATE_SCREENSHOTS (tests/ui/conftest.py).
REQUIRE_SERVICES = os.environ.get("KBAI_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get("KBAI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("KBAI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Cheap password hashing in tests; production parameters are the argon2 defaults in Settings.
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 64, "argon2_parallelism": 1}
OPERATOR = Actor.operator()
# The operator's key for webhook secrets at rest, as a deployment on PostgreSQL must set it: every Settings()
# of the run (and every server and worker started by server_env) has it. Tests of the default without a key
# (the key file beside a SQLite database) pass encryption_key=None.
TEST_ENCRYPTION_KEY = "k0KrzVnR9T7Gm5yY6v5cQ2kzS8K3Xz7mW0ZbE1cJqYw="
os.environ["KBAI_ENCRYPTION_KEY"] = TEST_ENCRYPTION_KEY


_T = TypeVar("_T")


def run_coroutine(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run *coro* to completion on a fresh event loop in its own thread and return its result.

    Not ``asyncio.run`` in the test's thread: Playwright's sync API (tests/ui) leaves an event loop marked
    running in the main thread while its browser is open, and ``asyncio.run`` refuses to start there.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-coroutine") as pool:
        return pool.submit(asyncio.run, coro).result()


def missing_service(what: str) -> None:
    """Skip (developer machine) or fail (CI) a test whose service is not there."""
    what = re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", what)  # never a password in the report
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (KBAI_REQUIRE_SERVICES=1) but not available", pytrace=False)
    pytest.skip(f"{what} not available")


def _pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A migrated PostgreSQL database that each test's database is copied from (None: no PostgreSQL)."""
    name = f"kbai_tmpl_{uuid.uuid4().hex[:12]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        yield None
        return
    db = Database(_pg_url(name))
    db.upgrade()
    db.dispose()
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tmpl") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def fresh_database(backend: str, request: pytest.FixtureRequest, folder: Path, prefix: str) -> Iterator[str]:
    """A migrated, empty database copied from the session's template; PostgreSQL ones are dropped after."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = folder / "kbai.db"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    template_name = request.getfixturevalue("pg_template")
    if template_name is None:
        missing_service(f"PostgreSQL at {PG_ADMIN_URL}")
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}" STRATEGY FILE_COPY')
    try:
        yield _pg_url(name)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def own_pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test's own, so it can be closed to connections."""
    name = f"kbai_out_{uuid.uuid4().hex[:12]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        missing_service(f"PostgreSQL at {PG_ADMIN_URL}")
    url = _pg_url(name)
    db = Database(url)
    db.upgrade()
    db.dispose()
    try:
        yield name
    finally:
        _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated, empty database of the test's backend."""
    with fresh_database(backend, request, tmp_path, "kbai_t_") as url:
        yield url


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, **FAST_ARGON2)


@pytest.fixture
def services(settings: Settings, clock: FrozenClock) -> Iterator[Services]:
    svc = Services.build(settings, clock=clock)
    yield svc
    svc.close()


@dataclass
class World:
    """A tenant with an admin and a developer who may manage tokens."""

    services: Services
    tenant_id: int
    admin: Actor
    dev: Actor
    dev_role_id: int

    def actor(self, email: str) -> Actor:
        user = self.services.access.user_by_email(email, self.tenant_id)
        assert user is not None
        with self.services.db.read() as s:
            perms = self.services.access.permissions(s, user)
        return Actor(
            kind="user",
            user_id=user.id,
            tenant_id=user.tenant_id,
            email=user.email,
            permissions=perms,
            person_id=user.person_id,
        )


def give_dev_service_tokens(world: World) -> None:
    """dev@acme.test: manage service tokens too (an extra role on top of Developers), without developer.review_tokens
    or roles.manage."""
    svc = world.services
    role = svc.access.create_role(OPERATOR, world.tenant_id, "Automation", ["developer.manage_service_tokens"])
    dev = svc.access.user_by_email("dev@acme.test", world.tenant_id)
    assert dev is not None
    svc.access.set_user_roles(OPERATOR, dev.id, [world.dev_role_id, role.id])


def build_world(svc: Services, tenant: str = "Acme", domain: str = "acme.test") -> World:
    t, admin_user, _ = svc.access.create_tenant(OPERATOR, tenant, f"admin@{domain}", "admin-password-1")
    role = svc.access.create_role(OPERATOR, t.id, "Developers", ["developer.manage_tokens", "users.read", "roles.read"])
    svc.access.create_user(OPERATOR, t.id, f"dev@{domain}", "dev-password-1", [role.id])
    world = World(svc, t.id, None, None, role.id)  # type: ignore[arg-type]
    world.admin = world.actor(f"admin@{domain}")
    world.dev = world.actor(f"dev@{domain}")
    return world


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


# ---- real server processes ------------------------------------------------------------------
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import httpx  # noqa: E402

KBAI_BIN = str(Path(sys.executable).parent / "kbai")
# Every server log of the run, scanned for tokens when the run ends (see secrets_never_logged).
SERVER_LOGS: list[Path] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")}
    env.update(
        {
            "KBAI_DATABASE_URL": database_url,
            "KBAI_ARGON2_TIME_COST": "1",
            "KBAI_ARGON2_MEMORY_KIB": "64",
            "KBAI_ARGON2_PARALLELISM": "1",
            "KBAI_LOG_LEVEL": "DEBUG",
            "KBAI_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        }
    )
    env.update(extra)
    return env


@dataclass
class LiveServer:
    """A real `kbai serve` process. ``log`` is its combined stdout/stderr file."""

    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]


def start_server(database_url: str, log_dir: Path, *, args: tuple[str, ...] = (), **env_extra: str) -> LiveServer:
    port = free_port()
    env = server_env(database_url, **env_extra)
    log = log_dir / f"kbai-serve-{port}.log"
    SERVER_LOGS.append(log)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [KBAI_BIN, "serve", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    # a waiting limit, not a speed check: 2 loaded cores can take a minute to start 2 workers
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kbai serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return LiveServer(url, proc, env, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"kbai serve did not become healthy: {log.read_text()[-2000:]}")


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """`kbai serve` on a free port against the test's fresh database (both backends)."""
    server = start_server(database_url, tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like ``database_url`` but shared by the tests of one module (per backend), for tests that start a
    server once and keep their data apart themselves (their own tokens, users or names)."""
    with fresh_database(request.param, request, tmp_path_factory.mktemp("moddb"), "kbai_m_") as url:
        yield url


# ---- secrets: the whole run's logs never hold a full token ---------------------------------------
import logging  # noqa: E402

FULL_TOKEN = re.compile(r"kbai_(?:pk|scim)_[0-9a-fA-F]{64}")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.hits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a record that can't be formatted can't leak either
            return
        if FULL_TOKEN.search(text):
            self.hits.append(f"{record.name}:{record.levelname}")


@pytest.fixture(scope="session", autouse=True)
def secrets_never_logged() -> Iterator[None]:
    """Every log line of the run (in-process at DEBUG, and every `kbai serve` started at DEBUG) is
    checked for a full token: any token-shaped string in a log is a leak, whoever minted it."""
    from kbai.logs import RedactingJsonFormatter

    handler = _Collect()
    handler.setFormatter(RedactingJsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(old_level)
    leaks = list(handler.hits)
    for log in SERVER_LOGS:
        if log.exists() and FULL_TOKEN.search(log.read_text(errors="replace")):
            leaks.append(str(log))
    assert not leaks, f"full tokens were logged by: {leaks}"


# ---- Hypothesis: no per-example deadline (2 noisy cores; time limits belong in bench/) -----------
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("kbai", deadline=None)
_hypothesis_settings.load_profile("kbai")


# ---- Redis: a key prefix of the test's own -------------------------------------------------------
@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique KBAI_REDIS_PREFIX; every key under it is deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        missing_service(f"Redis at {REDIS_URL}")
    prefix = f"kbai-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()

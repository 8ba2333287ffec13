"""No I/O on a warm request, one statement on a cold one (issue 16), counted, not timed.

In every supported configuration (SQLite alone, PostgreSQL alone, PostgreSQL + Redis) the real app
answers 1,000 warm successful `/auth/check` and `/api/v1/me` requests without one SQL statement
(SQLAlchemy's ``before_cursor_execute``, on every engine of the process) and without one Redis
command (``INFO commandstats`` of a Redis server of this test's own, so no other test's traffic
counts). A token nobody has verified yet costs exactly one SQL statement (with a listener attached the
statement goes through SQLAlchemy's execute, which is how it is seen here; tests/store/test_direct_read.py
counts the direct path at the driver itself).

Background work that does not depend on the traffic is not per-request I/O and is kept out of the
window: the last-used flush runs every hour here (its writes are counted in tests/web/test_last_used.py),
the outbox dispatcher is stopped (mail and webhooks go out at their commit), and the invalidation channels (Redis subscription, PostgreSQL LISTEN, the SQLite poller) hold their
own connections outside the engines' pools.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, World, build_world
from tests.private_redis import CommandCounter, private_redis

WARM_REQUESTS = 1000
CLIENT_IP = "203.0.113.7"
CONFIGURATIONS = [("sqlite", False), ("postgres", False), ("postgres", True)]
IDS = ["sqlite", "postgres", "postgres+redis"]


@contextmanager
def sql_statements() -> Iterator[list[str]]:
    """Every statement any SQLAlchemy engine of this process sends while the block runs."""
    seen: list[str] = []
    lock = threading.Lock()

    def listener(conn, cursor, statement, params, context, executemany):
        with lock:
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", listener)


@contextmanager
def redis_commands(url: str | None) -> Iterator[Counter[str]]:
    """Redis commands (by name) the server received while the block ran; empty without Redis.

    The invalidation subscription sends a keep-alive PING every 10 s whatever the traffic
    (``health_check_interval``): that many PINGs are allowed for the time the block took, no more.
    """
    delta: Counter[str] = Counter()
    if url is None:
        yield delta
        return
    counter = CommandCounter(url)
    started = time.monotonic()
    before = counter.calls()
    try:
        yield delta
    finally:
        after = counter.calls()
        keep_alive = int((time.monotonic() - started) / 10) + 1
        counter.close()
        delta.update({name: n - before[name] for name, n in after.items() if n > before[name]})
        if delta["ping"] <= keep_alive:
            del delta["ping"]


@dataclass
class Running:
    services: Services
    world: World
    client: TestClient
    redis_url: str | None

    def token(self, name: str, scopes: list[str] | None = None, **restrictions: object) -> str:
        _, plaintext = self.services.tokens.create(self.world.dev, name, scopes or ["users.read"], **restrictions)
        return plaintext


@pytest.fixture
def running(backend: str, with_redis: bool, database_url: str, tmp_path: Path) -> Iterator[Running]:
    """The app with its background parts started (lifespan), as `kbai serve` runs it."""
    with contextmanager_or_none(with_redis, tmp_path) as redis_url:
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            redis_prefix="warm-io",
            last_used_flush_seconds=3600,
            **FAST_ARGON2,
        )
        svc = Services.build(settings)
        world = build_world(svc)
        try:
            # A real client address, so that IP allowlists have something to judge.
            with TestClient(create_app(svc), client=(CLIENT_IP, 50000)) as client:
                # The outbox dispatcher wakes after a commit that queued mail or a webhook (a token's
                # creation does) and then polls on its own: stopped, it sends at the commit itself, before
                # the window, instead of in the middle of it whenever its thread gets to run.
                svc.outbox.stop()
                yield Running(svc, world, client, redis_url)
        finally:
            svc.close()


@contextmanager
def contextmanager_or_none(with_redis: bool, folder: Path) -> Iterator[str | None]:
    if not with_redis:
        yield None
        return
    with private_redis(folder) as (url, _proc):
        yield url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("backend", "with_redis"), CONFIGURATIONS, ids=IDS)
@pytest.mark.parametrize("path", ["/auth/check", "/auth/check?scope=users.read", "/api/v1/me"])
def test_warm_successful_requests_cost_no_sql_and_no_redis(running: Running, path: str) -> None:
    token = running.token("warm")
    headers = bearer(token)
    assert running.client.get(path, headers=headers).status_code == 200  # loads the record once
    with sql_statements() as sql, redis_commands(running.redis_url) as commands:
        statuses = Counter(running.client.get(path, headers=headers).status_code for _ in range(WARM_REQUESTS))
    assert statuses == {200: WARM_REQUESTS}
    assert sql == [], f"{len(sql)} SQL statements in {WARM_REQUESTS} warm requests, e.g. {sql[:3]}"
    assert not commands, f"Redis commands in {WARM_REQUESTS} warm requests: {dict(commands)}"


@pytest.mark.parametrize(("backend", "with_redis"), CONFIGURATIONS, ids=IDS)
@pytest.mark.parametrize("path", ["/auth/check", "/api/v1/me"])
def test_a_cold_verification_is_one_sql_statement(running: Running, path: str) -> None:
    token = running.token("cold", ["users.read", "roles.read"])
    with sql_statements() as sql:
        r = running.client.get(path, headers=bearer(token))
    assert r.status_code == 200
    assert len(sql) == 1, f"a cold verification sent {len(sql)} statements: {sql}"
    assert sql[0].lstrip().upper().startswith("SELECT")
    # The one statement brought everything: the owner's permissions decide the effective scopes.
    if path == "/api/v1/me":
        assert r.json()["scopes"] == ["users.read", "roles.read"]
    else:
        assert r.headers["x-kbai-scopes"] == "users.read roles.read"


@pytest.mark.parametrize(("backend", "with_redis"), CONFIGURATIONS, ids=IDS)
@pytest.mark.parametrize("path", ["/auth/check", "/api/v1/me"])
def test_warm_requests_with_restrictions_cost_no_sql_and_no_redis(running: Running, path: str) -> None:
    """An IP allowlist (50 ranges, the client in the last), a rate limit, a quota, a description and
    self-rotation set: still no I/O. The first request takes this instance's shares of the rate and the quota
    (5 % of each, kbai.tokens.limits); the next one is taken in the background when half of a share is spent,
    which 1,000 requests of these limits do not reach."""
    allowed = [f"10.{i}.0.0/16" for i in range(48)] + ["2001:db8::/32", "203.0.113.0/24"]
    token = running.token(
        "restricted",
        allowed_ips=allowed,
        description="warm",
        self_rotate=True,
        rate_limit={"requests": 1_000_000, "per": "hour"},
        quota={"remaining": 1_000_000, "refill": {"amount": 1_000_000, "interval": "month"}},
    )
    headers = bearer(token)
    assert running.client.get(path, headers=headers).status_code == 200
    with sql_statements() as sql, redis_commands(running.redis_url) as commands:
        answers = [running.client.get(path, headers=headers) for _ in range(WARM_REQUESTS)]
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: WARM_REQUESTS}
    if path == "/auth/check":  # every one of them was counted against the quota, exactly
        assert answers[-1].headers["x-kbai-quota-remaining"] == str(1_000_000 - 1 - WARM_REQUESTS)
    assert sql == [], f"{len(sql)} SQL statements in {WARM_REQUESTS} warm requests, e.g. {sql[:3]}"
    assert not commands, f"Redis commands in {WARM_REQUESTS} warm requests: {dict(commands)}"
    # The list is enforced on that same warm path: a token that does not list the client is refused.
    outside = running.token("elsewhere", allowed_ips=["198.51.100.0/24"])
    assert running.client.get(path, headers=bearer(outside)).status_code == 401


@pytest.mark.parametrize(("backend", "with_redis"), CONFIGURATIONS, ids=IDS)
@pytest.mark.parametrize("path", ["/auth/check", "/auth/check?scope=users.read", "/api/v1/me"])
def test_warm_service_token_requests_cost_no_sql_and_no_redis(running: Running, path: str) -> None:
    """A service token (owned by the tenant, bounded by a ceiling): one statement cold, none warm."""
    svc = running.services
    svc.tokens.set_ceiling(running.world.admin, ["users.read", "roles.read"])
    _, token = svc.tokens.create_service(running.world.admin, "warm-service", ["users.read"])
    headers = bearer(token)
    with sql_statements() as cold:
        first = running.client.get(path, headers=headers)
    assert first.status_code == 200 and len(cold) == 1, f"cold: {first.status_code}, {len(cold)} statements"
    with sql_statements() as sql, redis_commands(running.redis_url) as commands:
        statuses = Counter(running.client.get(path, headers=headers).status_code for _ in range(WARM_REQUESTS))
    assert statuses == {200: WARM_REQUESTS}
    assert sql == [], f"{len(sql)} SQL statements in {WARM_REQUESTS} warm requests, e.g. {sql[:3]}"
    assert not commands, f"Redis commands in {WARM_REQUESTS} warm requests: {dict(commands)}"

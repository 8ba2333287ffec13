"""The invalidation bus of each deployment (issue 16): Redis when configured, else the database's own
(PostgreSQL LISTEN/NOTIFY, a table SQLite processes poll). In process, with two Services on one
database standing in for two instances; tests/e2e runs the same over real servers and workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select

from kbai.cache.bus import DatabaseBus, LocalBus, PostgresBus, RedisBus
from kbai.config import Settings
from kbai.services import Services
from kbai.store.models import BusMessage
from kbai.tokens.verify import Outcome
from tests.cache.test_cache import token_queries
from tests.conftest import FAST_ARGON2, OPERATOR, REDIS_URL, World


def _eventually(check: Callable[[], bool], within: float = 1.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "not propagated in time"
        time.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture
def pair(world: World, database_url: str, clock) -> Iterator[tuple[Services, Services]]:
    """Two started instances without Redis, keeping cache entries for ten minutes."""
    settings = Settings(database_url=database_url, cache_max_age_seconds=600, **FAST_ARGON2)
    a, b = Services.build(settings, clock=clock), Services.build(settings, clock=clock)
    a.start()
    b.start()
    yield a, b
    for svc in (a, b):
        svc.stop()
        svc.close()


def test_each_deployment_gets_its_bus(database_url: str, backend: str) -> None:
    svc = Services.build(Settings(database_url=database_url, **FAST_ARGON2))
    with_redis = Services.build(Settings(database_url=database_url, redis_url=REDIS_URL, **FAST_ARGON2))
    memory = Services.build(Settings(database_url="sqlite://", **FAST_ARGON2))
    try:
        assert isinstance(svc.bus, DatabaseBus if backend == "sqlite" else PostgresBus)
        assert isinstance(with_redis.bus, RedisBus)
        assert isinstance(memory.bus, LocalBus)
    finally:
        for s in (svc, with_redis, memory):
            s.close()


def test_revocation_and_permission_change_on_a_reach_b_without_redis(
    world: World, pair: tuple[Services, Services]
) -> None:
    a, b = pair
    assert a.bus.healthy and b.bus.healthy
    view, token = world.services.tokens.create(world.dev, "shared", ["users.read", "roles.read"])
    assert b.tokens.verify(token, ["roles.read"]).ok
    with token_queries(b) as queries:
        assert b.tokens.verify(token, ["roles.read"]).ok
    assert queries == [], "B must be serving from its cache for this test to mean anything"
    a.access.update_role(OPERATOR, world.dev_role_id, ["developer.manage_tokens", "users.read"])
    _eventually(lambda: b.tokens.verify(token, ["roles.read"]).outcome is Outcome.INSUFFICIENT_SCOPE)
    a.tokens.revoke(world.dev, view.id)
    _eventually(lambda: b.tokens.verify(token).outcome is Outcome.REVOKED)


def test_a_block_on_a_reaches_b_without_redis(pair: tuple[Services, Services]) -> None:
    a, b = pair
    for _ in range(a.settings.auth_failures_per_minute):
        a.token_failures.failed("198.51.100.40")
    assert a.token_failures.blocked("198.51.100.40")
    _eventually(lambda: b.token_failures.blocked("198.51.100.40") > 0)


def test_a_process_that_never_listens_keeps_entries_only_the_short_ttl(world: World, database_url: str) -> None:
    """The CLI, or an SDK verifier used without its lifespan, hears of no change: KBAI_CACHE_TTL_SECONDS."""
    svc = Services.build(Settings(database_url=database_url, cache_ttl_seconds=0.2, **FAST_ARGON2))
    try:
        assert not svc.bus.started
        _, token = world.services.tokens.create(world.dev, "alone", ["users.read"])
        with token_queries(svc) as queries:
            for _ in range(5):
                assert svc.tokens.verify(token).ok
            assert len(queries) == 1
            time.sleep(0.3)
            assert svc.tokens.verify(token).ok
        assert len(queries) == 2
    finally:
        svc.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_messages_are_pruned_by_later_publishers(world: World, pair: tuple[Services, Services], clock) -> None:
    a, _ = pair
    a.bus.publish_many(["*"] * 3)
    with a.db.read() as s:
        assert s.scalar(select(func.count(BusMessage.id))) >= 3
    with a.db.write() as s:  # make every row old
        s.execute(BusMessage.__table__.update().values(created_at=clock.now().replace(year=2000)))
    a.bus.publish("*")
    with a.db.read() as s:
        assert s.scalar(select(func.count(BusMessage.id))) == 1

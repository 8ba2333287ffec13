"""The verification cache: warm hits skip the database; every change is honoured on the next request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from kbai.cache.bus import RedisBus
from kbai.cache.verification import VerificationCache
from kbai.config import Settings
from kbai.services import Services
from kbai.tokenformat import digest, mint
from kbai.tokens.verify import Outcome
from tests.conftest import FAST_ARGON2, OPERATOR, REDIS_URL, World


@contextmanager
def token_queries(services: Services) -> Iterator[list[str]]:
    """Collects every SQL statement that reads the tokens table."""
    seen: list[str] = []

    def listener(conn, cursor, statement, params, context, executemany):
        if "FROM tokens" in statement:
            seen.append(statement)

    for engine in services.db.engines:
        event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        for engine in services.db.engines:
            event.remove(engine, "before_cursor_execute", listener)


def _token(world: World, scopes: list[str] | None = None) -> tuple[int, str]:
    view, plaintext = world.services.tokens.create(world.dev, "cached", scopes or ["users.read"])
    return view.id, plaintext


def test_warm_verification_does_not_touch_the_database(world: World) -> None:
    _, token = _token(world)
    assert world.services.tokens.verify(token).ok
    with token_queries(world.services) as queries:
        for _ in range(100):
            assert world.services.tokens.verify(token, ["users.read"]).ok
    assert queries == []


def test_unknown_tokens_are_cached_briefly_and_malformed_never_looked_up(world: World) -> None:
    unknown = mint()
    with token_queries(world.services) as queries:
        for _ in range(50):
            assert world.services.tokens.verify(unknown).outcome is Outcome.UNKNOWN
            assert world.services.tokens.verify("kbai_pk_nothex").outcome is Outcome.MALFORMED
    assert len(queries) == 1


def test_revoke_is_honoured_on_the_next_request(world: World) -> None:
    token_id, token = _token(world)
    assert world.services.tokens.verify(token).ok
    world.services.tokens.revoke(world.dev, token_id)
    assert world.services.tokens.verify(token).outcome is Outcome.REVOKED


def test_rotation_grace_and_expiry_need_no_invalidation(world: World, clock) -> None:
    token_id, token = _token(world)
    assert world.services.tokens.verify(token).ok
    world.services.tokens.rotate(world.dev, token_id, 60)
    assert world.services.tokens.verify(token).ok
    clock.advance(seconds=60)
    assert world.services.tokens.verify(token).outcome is Outcome.REVOKED


def test_permission_removal_and_deactivation_are_honoured_at_once(world: World) -> None:
    _, token = _token(world, ["users.read", "roles.read"])
    assert world.services.tokens.verify(token, ["roles.read"]).ok
    world.services.access.update_role(OPERATOR, world.dev_role_id, ["developer.manage_tokens", "users.read"])
    result = world.services.tokens.verify(token, ["roles.read"])
    assert result.outcome is Outcome.INSUFFICIENT_SCOPE and result.scopes == frozenset({"users.read"})
    world.services.access.deactivate_user(OPERATOR, world.dev.user_id)  # type: ignore[arg-type]
    assert world.services.tokens.verify(token).outcome is Outcome.OWNER_INACTIVE


def test_a_load_racing_an_invalidation_is_not_stored() -> None:
    cache: VerificationCache
    calls = 0

    def loader(d: str):
        nonlocal calls
        calls += 1
        cache.invalidate([d])  # a revocation commits while this load is in flight
        return None

    cache = VerificationCache(loader, ttl_seconds=60, negative_ttl_seconds=60)
    cache.lookup("a" * 64)
    cache.lookup("a" * 64)
    assert calls == 2 and len(cache) == 0


def test_ttl_bounds_reuse_without_redis() -> None:
    calls = 0

    def loader(d: str):
        nonlocal calls
        calls += 1
        return None

    cache = VerificationCache(loader, ttl_seconds=0.05, negative_ttl_seconds=0.05)
    cache.lookup("b" * 64)
    cache.lookup("b" * 64)
    assert calls == 1
    time.sleep(0.1)
    cache.lookup("b" * 64)
    assert calls == 2


def test_cache_is_bounded() -> None:
    cache = VerificationCache(lambda d: None, ttl_seconds=60, negative_ttl_seconds=60, max_entries=100)
    for i in range(1000):
        cache.lookup(f"{i:064x}")
    assert len(cache) == 100


# ---- Redis: several instances --------------------------------------------------------------
@pytest.fixture
def two_instances(world: World, database_url: str, redis_prefix: str, clock) -> Iterator[tuple[Services, Services]]:
    settings = Settings(database_url=database_url, redis_url=REDIS_URL, redis_prefix=redis_prefix, **FAST_ARGON2)
    a = Services.build(settings, clock=clock)
    b = Services.build(settings, clock=clock)
    a.start()
    b.start()
    yield a, b
    for svc in (a, b):
        svc.stop()
        svc.close()


def _eventually(check, within: float = 1.0) -> float:
    """Seconds until ``check()`` holds; fails when it doesn't within ``within`` seconds."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "not propagated in time"
        time.sleep(0.005)
    return time.monotonic() - start


def test_revocation_on_a_reaches_b_through_redis(world: World, two_instances: tuple[Services, Services]) -> None:
    a, b = two_instances
    view, token = world.services.tokens.create(world.dev, "shared", ["users.read"])
    assert a.tokens.verify(token).ok and b.tokens.verify(token).ok
    with token_queries(b) as queries:
        assert b.tokens.verify(token).ok
    assert queries == [], "B must be serving from its cache for this test to mean anything"
    a.tokens.revoke(world.dev, view.id)
    _eventually(lambda: b.tokens.verify(token).outcome is Outcome.REVOKED)


def test_permission_change_on_a_reaches_b(world: World, two_instances: tuple[Services, Services]) -> None:
    a, b = two_instances
    _, token = world.services.tokens.create(world.dev, "shared", ["users.read", "roles.read"])
    assert b.tokens.verify(token, ["roles.read"]).ok
    a.access.update_role(OPERATOR, world.dev_role_id, ["developer.manage_tokens", "users.read"])
    _eventually(lambda: b.tokens.verify(token, ["roles.read"]).outcome is Outcome.INSUFFICIENT_SCOPE)


def test_lost_redis_connection_bypasses_the_cache(world: World, database_url: str) -> None:
    settings = Settings(database_url=database_url, redis_url="redis://127.0.0.1:1/0", **FAST_ARGON2)
    svc = Services.build(settings)
    svc.bus.start(svc._on_invalidation, wait_seconds=0.3)  # port 1 refuses
    try:
        assert not svc.bus.healthy
        _, token = world.services.tokens.create(world.dev, "bypass", ["users.read"])
        with token_queries(svc) as queries:
            for _ in range(3):
                assert svc.tokens.verify(token).ok
        assert len(queries) == 3
    finally:
        svc.bus.stop()
        svc.close()


def test_redis_bus_delivers_messages(redis_prefix: str) -> None:
    got: list[str] = []
    ready = threading.Event()

    def handler(message: str) -> None:
        got.append(message)
        if message != "*":
            ready.set()

    bus = RedisBus(REDIS_URL, redis_prefix)
    bus.start(handler)
    try:
        assert bus.healthy
        RedisBus(REDIS_URL, redis_prefix).publish(digest("x"))
        assert ready.wait(2)
        assert got[0] == "*" and got[-1] == digest("x")
    finally:
        bus.stop()


def _request(services: Services):
    from starlette.requests import Request

    app = type("App", (), {"state": type("S", (), {"services": services})()})()
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/auth/check",
            "headers": [],
            "client": ("203.0.113.9", 5555),
            "app": app,
            "query_string": b"",
        }
    )


def test_warm_only_verification_never_touches_storage(world: World) -> None:
    from kbai.web.auth import verify_bearer

    svc = world.services
    _, token = _token(world)
    with token_queries(svc) as queries:
        assert verify_bearer(svc, _request(svc), token, warm_only=True) is None  # cold: defer to the pool
    assert queries == []
    assert verify_bearer(svc, _request(svc), token) is not None  # loads and caches
    with token_queries(svc) as queries:
        warm = verify_bearer(svc, _request(svc), token, ("users.read",), warm_only=True)
    assert warm is not None and warm.ok and queries == []

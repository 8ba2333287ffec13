"""A token's rate limit and quota across two real `kbai serve` processes on one PostgreSQL database, with
Redis and without (PostgreSQL alone), their clocks frozen (KBAI_FAKE_NOW): a burst over the rate spread
over both is cut within 10 % of the limit in total; a quota of 100 serves at most 110 requests across both,
then 429 (401 at /auth/check) until the refill, after which it serves again."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from kbai.clock import FrozenClock, iso
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, REDIS_URL, LiveServer, build_world, start_server

NOW = datetime(2026, 6, 15, 10, 0, 0, tzinfo=UTC)
BURST = 300


def _token(database_url: str, **limits: Any) -> str:
    svc = Services.build(Settings(database_url=database_url, **FAST_ARGON2), clock=FrozenClock(NOW))
    try:
        world = build_world(svc)
        _, plaintext = svc.tokens.create(world.dev, "shared", ["users.read"], **limits)
        return plaintext
    finally:
        svc.close()


@pytest.fixture(params=["postgres-alone", "postgres-redis"])
def pair_env(request: pytest.FixtureRequest) -> dict[str, str]:
    env = {"KBAI_FAKE_NOW": iso(NOW) or ""}
    if request.param == "postgres-redis":
        env.update(KBAI_REDIS_URL=REDIS_URL, KBAI_REDIS_PREFIX=request.getfixturevalue("redis_prefix"))
    return env


def _pair(database_url: str, tmp_path: Path, env: dict[str, str]) -> tuple[LiveServer, LiveServer]:
    a = start_server(database_url, tmp_path, **env)
    try:
        return a, start_server(database_url, tmp_path, **env)
    except Exception:
        a.stop()
        raise


@pytest.fixture
def stopped() -> Iterator[list[LiveServer]]:
    servers: list[LiveServer] = []
    yield servers
    for server in servers:
        server.stop()


def _burst(
    servers: tuple[LiveServer, LiveServer], token: str, path: str = "/auth/check", n: int = BURST
) -> Counter[int]:
    """``n`` requests spread evenly over both servers, eight at a time."""
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=s.url, timeout=30) for s in servers]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = pool.map(lambda i: clients[i % 2].get(path, headers=headers).status_code, range(n))
            return Counter(codes)
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_burst_over_the_rate_is_cut_within_ten_percent_across_two_instances(
    database_url: str, tmp_path: Path, pair_env: dict[str, str], stopped: list[LiveServer]
) -> None:
    token = _token(database_url, rate_limit={"requests": 100, "per": "hour"})
    servers = _pair(database_url, tmp_path, pair_env)
    stopped.extend(servers)
    codes = _burst(servers, token)
    assert set(codes) <= {200, 401}, codes
    assert 90 <= codes[200] <= 110, f"{codes[200]} served of a limit of 100 across both instances"
    # Each instance goes on refusing, with the end of the window (11:00, an hour after the frozen 10:00).
    for server in servers:
        r = httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert r.headers["retry-after"] == "3600"


@pytest.mark.parametrize("backend", ["postgres"])
def test_a_quota_of_100_serves_at_most_110_across_two_instances_then_waits_for_the_refill(
    database_url: str, tmp_path: Path, pair_env: dict[str, str], stopped: list[LiveServer]
) -> None:
    token = _token(database_url, quota={"remaining": 100, "refill": {"amount": 100, "interval": "day"}})
    servers = _pair(database_url, tmp_path, pair_env)
    stopped.extend(servers)
    codes = _burst(servers, token)
    assert set(codes) <= {200, 401}, codes
    assert 90 <= codes[200] <= 110, f"{codes[200]} served of a quota of 100 across both instances"
    for server in servers:
        r = httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exhausted"
        assert r.headers["retry-after"] == str(14 * 3600)  # 10:00 UTC now, the refill at midnight
        check = httpx.get(server.url + "/auth/check", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert check.status_code == 401 and check.headers["x-kbai-quota-remaining"] == "0"
    # The next day (both clocks moved on): the refill serves again, once more at most 110 in all.
    for server in servers:
        server.stop()
    stopped.clear()
    later = {**pair_env, "KBAI_FAKE_NOW": iso(NOW + timedelta(days=1)) or ""}
    servers = _pair(database_url, tmp_path, later)
    stopped.extend(servers)
    codes = _burst(servers, token)
    assert 90 <= codes[200] <= 110, f"{codes[200]} served after the refill of 100"

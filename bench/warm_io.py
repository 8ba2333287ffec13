"""Section: SQL statements and Redis commands per 10,000 warm requests, counted, in every configuration.

In process, through the real app (``create_app`` behind httpx's ASGITransport, 16 requests in
flight, its background parts started as under ``kbai serve``: the invalidation listener and the
last-used flusher at its default 60 s): SQLite alone, PostgreSQL alone, PostgreSQL + Redis (a
redis-server of the bench's own, so its ``INFO commandstats`` counts only this app). After one
request per token has loaded it, 10,000 requests alternate ``/auth/check`` and ``GET /api/v1/me``
over 10 tokens; a SQLAlchemy ``before_cursor_execute`` listener on every engine counts statements.
Then one request with a token never seen before: the statements a cold verification costs.
Statements from kbai's background threads (the last-used flush every 60 s) are counted apart.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from typing import Any

import seed
from common import FAST_ARGON2, log, scratch_pg, scratch_sqlite
from http_load import RedisCalls, private_redis


def _scenario(url: str, redis_url: str | None, requests: int, n_tokens: int) -> dict[str, Any]:
    import httpx
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from kbai.app import create_app
    from kbai.config import Settings
    from kbai.services import Services

    ds = seed.load(url, 1_000, 10, sample_size=n_tokens + 1)
    tokens = [s.token for s in ds.sample[:n_tokens]]
    cold_token = ds.sample[n_tokens].token
    svc = Services.build(
        Settings(
            database_url=url,
            redis_url=redis_url,
            log_level="WARNING",
            redis_prefix=f"kbai-bench-{uuid.uuid4().hex[:8]}",
            **FAST_ARGON2,
        )
    )
    statements: list[tuple[str, str]] = []

    def seen(conn, cursor, statement, params, context, executemany) -> None:
        statements.append((threading.current_thread().name, statement))

    app = create_app(svc, start_background=False)
    paths = ("/auth/check", "/api/v1/me")

    async def drive(count: int, only: str | None = None) -> Counter[int]:
        statuses: Counter[int] = Counter()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            queue = list(range(count))

            async def worker() -> None:
                while queue:
                    i = queue.pop()
                    token = only or tokens[i % n_tokens]
                    r = await client.get(paths[i % 2], headers={"Authorization": f"Bearer {token}"})
                    statuses[r.status_code] += 1

            await asyncio.gather(*(worker() for _ in range(16 if only is None else 1)))
        return statuses

    svc.start()
    redis_calls = RedisCalls(redis_url) if redis_url else None
    try:
        asyncio.run(drive(n_tokens * 2))  # each token once on each path: loaded and cached
        redis_before = redis_calls() if redis_calls else {}
        event.listen(Engine, "before_cursor_execute", seen)
        started = time.monotonic()
        statuses = asyncio.run(drive(requests))
        elapsed = time.monotonic() - started
        event.remove(Engine, "before_cursor_execute", seen)
        redis_after = redis_calls() if redis_calls else {}
        warm_statements = list(statements)
        statements.clear()
        event.listen(Engine, "before_cursor_execute", seen)
        cold_status = asyncio.run(drive(1, only=cold_token))
        event.remove(Engine, "before_cursor_execute", seen)
    finally:
        if redis_calls:
            redis_calls.close()
        svc.stop()
        svc.close()
    commands = {k: v - redis_before.get(k, 0) for k, v in redis_after.items() if v > redis_before.get(k, 0)}
    # Statements of the background threads (the last-used flusher, every 60 s; the invalidation listener)
    # run on a timer whatever the traffic: shown apart from the requests' own.
    background = [s for thread, s in warm_statements if thread.startswith("kbai-")]
    per_request = [s for thread, s in warm_statements if not thread.startswith("kbai-")]
    # The subscription's keep-alive PING (every 10 s whatever the traffic) is not per request.
    keep_alive = commands.pop("ping", 0)
    return {
        "requests": requests,
        "statuses": dict(statuses),
        "elapsed_s": round(elapsed, 2),
        "sql_statements": len(per_request),
        "sql_statements_per_10k": round(len(per_request) * 10_000 / requests, 2),
        "sql_examples": sorted({" ".join(s.split())[:120] for s in per_request})[:5],
        "background_sql_statements": len(background),
        "background_sql_examples": sorted({" ".join(s.split())[:80] for s in background})[:5],
        "redis_commands": commands if redis_url else None,
        "redis_commands_per_10k": round(sum(commands.values()) * 10_000 / requests, 2) if redis_url else None,
        "redis_keep_alive_pings": keep_alive if redis_url else None,
        "cold_status": dict(cold_status),
        "cold_sql_statements": len([s for thread, s in statements if not thread.startswith("kbai-")]),
    }


def run(quick: bool) -> dict[str, Any]:
    requests = 2_000 if quick else 10_000
    out: dict[str, Any] = {}
    with scratch_sqlite("warmio") as url:
        log(f"warm I/O: SQLite alone, {requests:,} requests")
        out["sqlite"] = _scenario(url, None, requests, 10)
    with scratch_pg("warmio") as url:
        log(f"warm I/O: PostgreSQL alone, {requests:,} requests")
        out["postgresql"] = _scenario(url, None, requests, 10)
    with scratch_pg("warmio_redis") as url, private_redis() as redis_url:
        log(f"warm I/O: PostgreSQL + Redis, {requests:,} requests")
        out["postgresql_redis"] = _scenario(url, redis_url, requests, 10)
    return out

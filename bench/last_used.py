"""Section 4: database writes for "Last used" per 10,000 authenticated requests.

In process, through the real app (``kbai.app.create_app`` behind httpx's ASGITransport, 16
requests in flight, the flusher thread running as under ``kbai serve``), half ``/auth/check`` and
half ``GET /api/v1/me``, spread over 10 tokens. Every statement that reaches the database is seen
by a SQLAlchemy ``before_cursor_execute`` listener; the UPDATEs of ``tokens`` are counted, and the
``kbai_last_used_flushes`` metric gives the number of flushes. Two settings: the default flush
interval (60 s, so everything is written once at shutdown) and a 1 s interval.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import warnings
from typing import Any

import seed
from common import FAST_ARGON2, log, scratch_sqlite

_UPDATE_TOKENS = re.compile(r"^\s*UPDATE\s+tokens\b", re.I)
_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.I)


def _scenario(interval: float, requests: int, n_tokens: int) -> dict[str, Any]:
    import httpx
    from sqlalchemy import event

    from kbai.app import create_app
    from kbai.config import Settings
    from kbai.services import Services

    with scratch_sqlite("lastused") as url:
        ds = seed.load(url, 1_000, 10, sample_size=n_tokens)
        tokens = [s.token for s in ds.sample[:n_tokens]]
        svc = Services.build(
            Settings(
                database_url=url,
                last_used_flush_seconds=interval,
                log_level="WARNING",
                auth_failures_per_minute=10_000,
                **FAST_ARGON2,
            )
        )
        counts = {"updates": 0, "statements": 0, "writes": 0}
        update_times: list[float] = []

        @event.listens_for(svc.db.engine, "before_cursor_execute")
        def _seen(conn, cursor, statement, params, context, executemany) -> None:
            counts["statements"] += 1
            if _WRITE.match(statement):
                counts["writes"] += 1 if not executemany else len(params)
            if _UPDATE_TOKENS.match(statement):
                counts["updates"] += 1
                update_times.append(time.monotonic())

        app = create_app(svc, start_background=False)
        paths = ("/auth/check", "/api/v1/me")

        async def drive() -> tuple[int, float]:
            ok = 0
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                queue = list(range(requests))

                async def worker() -> None:
                    nonlocal ok
                    while queue:
                        i = queue.pop()
                        r = await client.get(paths[i % 2], headers={"Authorization": f"Bearer {tokens[i % n_tokens]}"})
                        ok += r.status_code == 200

                started = time.monotonic()
                await asyncio.gather(*(worker() for _ in range(16)))
                return ok, time.monotonic() - started

        svc.start()  # what the app's lifespan does under kbai serve: the flusher thread
        started = time.monotonic()
        ok, elapsed = asyncio.run(drive())
        during = counts["updates"]
        svc.stop()  # shutdown: the last flush
        hits, misses = svc.cache.hits, svc.cache.misses
        flushes = int(svc.metrics.registry.get_sample_value("kbai_last_used_flushes_total") or 0)
        svc.close()
    intervals = max(1, math.ceil(elapsed / interval))
    return {
        "flush_interval_s": interval,
        "requests": requests,
        "successful": ok,
        "tokens": n_tokens,
        "elapsed_s": round(elapsed, 2),
        "updates_during_run": during,
        "updates_total": counts["updates"],
        "flushes": flushes,
        "updates_per_10k_requests": round(counts["updates"] * 10_000 / requests, 2),
        # Every INSERT/UPDATE/DELETE of any table (e.g. usage statistics written by the same flush).
        "all_writes_total": counts["writes"],
        # The goal: at most one write per token per flush interval (+1 for the final flush at shutdown).
        "bound": n_tokens * (intervals + 1),
        "writes_per_token_per_interval": round(counts["updates"] / (n_tokens * (intervals + 1)), 3),
        # The verification cache under 16 requests in flight (no Redis: entries live 1 s by default).
        "cache_hits": hits,
        "cache_misses": misses,
        "cache_ttl_s": svc.settings.cache_ttl_seconds,
        "update_offsets_s": [round(t - started, 2) for t in update_times][:50],
    }


def run(quick: bool) -> dict[str, Any]:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    requests = 10_000
    out = {}
    for interval in (1.0,) if quick else (60.0, 1.0):
        log(f"last used: {requests:,} requests, flush interval {interval:g} s")
        out[f"interval_{interval:g}s"] = _scenario(interval, requests, 10)
    return out

"""Runs in a separate, spawned OS process: its own Services, its own engine, the real system clock.

Only the outcome (a code, never a token) travels back to the test.
"""

from __future__ import annotations

import threading
from typing import Any


def create_one(database_url: str, actor: Any, name: str, barrier: Any, results: Any) -> None:
    from kbai.config import Settings
    from kbai.errors import KbaiError
    from kbai.services import Services

    settings = Settings(database_url=database_url, argon2_time_cost=1, argon2_memory_kib=64, argon2_parallelism=1)
    svc = Services.build(settings)  # SystemClock
    try:
        svc.db.ping()  # connect before the start line, so the creates really collide
        try:
            barrier.wait(timeout=120)
        except threading.BrokenBarrierError:
            results.put((name, "barrier_broken"))
            return
        try:
            svc.tokens.create(actor, name, [])
            results.put((name, "ok"))
        except KbaiError as exc:
            results.put((name, exc.code))
        except Exception as exc:  # noqa: BLE001 - reported to the test by type only
            results.put((name, f"unexpected {type(exc).__name__}"))
    finally:
        svc.close()

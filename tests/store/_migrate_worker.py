"""Runs in a separate, spawned OS process: migrate one database, as each `kbai serve` does on start."""

from __future__ import annotations

import threading
from typing import Any


def upgrade(database_url: str, name: str, barrier: Any, results: Any) -> None:
    from kbai.store import Database

    db = Database(database_url)
    try:
        db.ping()  # connected before the start line, so the migrations really start together
        try:
            barrier.wait(timeout=120)
        except threading.BrokenBarrierError:
            results.put((name, "barrier_broken"))
            return
        try:
            db.upgrade()
            results.put((name, "ok"))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results.put((name, f"{type(exc).__name__}: {str(exc)[:300]}"))
    finally:
        db.dispose()

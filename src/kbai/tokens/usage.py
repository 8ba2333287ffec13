"""Last used, without a database write per request: uses are buffered and flushed in batches.

Each instance keeps the latest use per token in memory and writes them all in one transaction
every ``KBAI_LAST_USED_FLUSH_SECONDS`` (and when it shuts down), so a token used 10,000 times in a
minute costs one UPDATE. Last used may lag by at most one flush interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import or_, update

from kbai.clock import utc_seconds
from kbai.store import Database
from kbai.store.models import Token

log = logging.getLogger("kbai.usage")


class UsageBuffer:
    def __init__(self, db: Database, interval_seconds: float, on_write: Callable[[int], None] | None = None) -> None:
        self.db = db
        self.interval = interval_seconds
        self._pending: dict[int, datetime] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_write = on_write

    def record(self, token_id: int, at: datetime) -> None:
        at = utc_seconds(at)
        with self._lock:
            seen = self._pending.get(token_id)
            if seen is None or at > seen:
                self._pending[token_id] = at

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write every buffered use; returns the number of tokens written."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            with self.db.write() as s:
                for token_id, at in sorted(batch.items()):
                    s.execute(
                        update(Token)
                        .where(Token.id == token_id, or_(Token.last_used_at.is_(None), Token.last_used_at < at))
                        .values(last_used_at=at)
                    )
        except Exception:
            # Put the uses back so the next flush retries them, newest time winning.
            with self._lock:
                for token_id, at in batch.items():
                    seen = self._pending.get(token_id)
                    if seen is None or at > seen:
                        self._pending[token_id] = at
            log.exception("last-used flush failed; will retry")
            return 0
        if self._on_write:
            self._on_write(len(batch))
        return len(batch)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kbai-last-used", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the flusher and write what is left (called on shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

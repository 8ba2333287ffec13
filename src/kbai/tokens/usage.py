"""Last used, without a database write per request: uses are buffered and flushed in batches.

Each instance keeps the latest use per token, and a request count per token and UTC hour, in
memory and writes them all in one transaction every ``KBAI_LAST_USED_FLUSH_SECONDS`` (and when it
shuts down), so a token used 10,000 times in a minute costs one UPDATE and one upsert. Last used
may lag by at most one flush interval; counts from several instances add up. The client address
and user agent of each token's latest use are kept with it (the activity view shows them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.dialects import postgresql, sqlite

from kbai.clock import utc_seconds
from kbai.store import Database
from kbai.store.models import Token, TokenUsageHour
from kbai.tokenformat import redact

log = logging.getLogger("kbai.usage")
ONE_SECOND = timedelta(seconds=1)


class UsageBuffer:
    def __init__(self, db: Database, interval_seconds: float, on_write: Callable[[int], None] | None = None) -> None:
        self.db = db
        self.interval = interval_seconds
        # token id -> (time, client IP, user agent) of its latest use
        self._pending: dict[int, tuple[datetime, str | None, str | None]] = {}
        self._counts: dict[tuple[int, datetime], int] = {}
        # token id -> (refusals, time and client IP of the latest) of requests a restriction refused
        self._refused: dict[int, tuple[int, datetime, str | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_write = on_write
        # The second the latest use fell in: [start, end), its whole-second UTC time and its hour. Most uses
        # fall in the same second as the one before, so the hot path compares instead of converting.
        self._second: tuple[datetime, datetime, datetime] | None = None

    def _in_second(self, at: datetime) -> tuple[datetime, datetime]:
        """(``at`` to the second, in UTC; its UTC hour)."""
        window = self._second
        if window is not None and at.tzinfo is not None and window[0] <= at < window[1]:
            return window[0], window[2]
        second = utc_seconds(at)
        hour = second.replace(minute=0, second=0)
        self._second = (second, second + ONE_SECOND, hour)
        return second, hour

    def record(self, token_id: int, at: datetime, ip: str | None = None, user_agent: str | None = None) -> None:
        at, hour_of = self._in_second(at)
        hour = (token_id, hour_of)
        with self._lock:
            seen = self._pending.get(token_id)
            if seen is None or at >= seen[0]:
                self._pending[token_id] = (at, ip, user_agent)
            self._counts[hour] = self._counts.get(hour, 0) + 1

    def refused(self, token_id: int, at: datetime, ip: str | None = None) -> None:
        """Count a request that a token restriction (the IP allowlist) refused, for its activity page."""
        at = utc_seconds(at)
        with self._lock:
            n, seen, seen_ip = self._refused.get(token_id, (0, at, ip))
            self._refused[token_id] = (n + 1, at, ip) if at >= seen else (n + 1, seen, seen_ip)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write every buffered use; returns the number of tokens written."""
        with self._lock:
            batch, self._pending = self._pending, {}
            counts, self._counts = self._counts, {}
            refused, self._refused = self._refused, {}
        if refused:
            self._flush_refused(refused)
        if not batch:
            return 0
        try:
            with self.db.write() as s:
                for token_id, (at, ip, agent) in sorted(batch.items()):
                    s.execute(
                        update(Token)
                        .where(Token.id == token_id, or_(Token.last_used_at.is_(None), Token.last_used_at < at))
                        .values(last_used_at=at, last_used_ip=_clip(ip, 64), last_used_user_agent=_clip(agent, 300))
                    )
                dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
                upsert = dialect.insert(TokenUsageHour).values(
                    [{"token_id": t, "hour": h, "requests": n} for (t, h), n in sorted(counts.items())]
                )
                s.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["token_id", "hour"],
                        set_={"requests": TokenUsageHour.requests + upsert.excluded.requests},
                    )
                )
        except Exception:
            # Put the uses back so the next flush retries them, newest time winning.
            with self._lock:
                for token_id, use in batch.items():
                    seen = self._pending.get(token_id)
                    if seen is None or use[0] > seen[0]:
                        self._pending[token_id] = use
                for key, n in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + n
            log.exception("last-used flush failed; will retry")
            return 0
        if self._on_write:
            self._on_write(len(batch))
        return len(batch)

    def _flush_refused(self, refused: dict[int, tuple[int, datetime, str | None]]) -> None:
        try:
            with self.db.write() as s:
                for token_id, (n, at, ip) in sorted(refused.items()):
                    s.execute(
                        update(Token)
                        .where(Token.id == token_id)
                        .values(
                            refused_count=Token.refused_count + n, last_refused_at=at, last_refused_ip=_clip(ip, 64)
                        )
                    )
        except Exception:
            with self._lock:
                for token_id, (n, at, ip) in refused.items():
                    m, seen, seen_ip = self._refused.get(token_id, (0, at, ip))
                    self._refused[token_id] = (n + m, at, ip) if at >= seen else (n + m, seen, seen_ip)
            log.exception("refusal-count flush failed; will retry")

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


def _clip(text: str | None, limit: int) -> str | None:
    """Printable, redacted (a user agent is the caller's text and could hold a token) and bounded."""
    if text is None:
        return None
    clean = redact("".join(ch for ch in text if ch.isprintable()))
    return clean[:limit] or None

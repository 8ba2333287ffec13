"""The only source of "now": injectable so that expiry can be tested to the second without sleeping."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)).astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(**delta)
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)


def utc_seconds(value: datetime) -> datetime:
    """``value`` in UTC with the sub-second part dropped: every stored time is second-precise."""
    return value.astimezone(UTC).replace(microsecond=0)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, or ``None``: the one time format of the API."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def human(value: datetime | None) -> str:
    """A time as people read it in messages ("Mar 3, 2026 14:05 UTC"), the way the pages show it."""
    if value is None:
        return "never"
    return value.astimezone(UTC).strftime("%b %-d, %Y %H:%M UTC")

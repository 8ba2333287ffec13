"""Rate limits on failures (token authentication per IP; logins per IP and per account).

Backed by the ``limits`` library: in-process memory by default, Redis when KBAI_REDIS_URL is set
so every instance shares the same counters. When Redis cannot be reached the counters fall back to
this process's memory (limits still hold, per instance) and Redis is tried again a few seconds later:
a Redis outage must not turn every token check and login into a 500.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

from limits import RateLimitItemPerMinute, storage, strategies
from limits.errors import StorageError

log = logging.getLogger("kbai.ratelimit")
T = TypeVar("T")
REDIS_RETRY_SECONDS = 5.0  # after a Redis failure, use local counters this long before trying Redis again


class FailureLimiter:
    def __init__(self, redis_url: str | None, prefix: str, auth_per_minute: int, login_per_minute: int) -> None:
        memory = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._remote: strategies.MovingWindowRateLimiter | None = None
        if redis_url:
            backend: storage.Storage = storage.storage_from_string(
                redis_url, key_prefix=f"{prefix}:limits", wrap_exceptions=True,
                socket_connect_timeout=2, socket_timeout=2)
            self._remote = strategies.MovingWindowRateLimiter(backend)
        else:
            backend = memory.storage
        self.storage = backend
        # In-process counters answer without I/O, so they may be consulted on an event loop.
        self.local = not redis_url
        self._memory = memory
        self._remote_down_until = 0.0
        self.auth = RateLimitItemPerMinute(auth_per_minute)
        self.login = RateLimitItemPerMinute(login_per_minute)

    def _use(self, action: Callable[[strategies.MovingWindowRateLimiter], T]) -> T:
        """``action`` on Redis when configured and reachable, else on this process's counters."""
        if self._remote is not None and time.monotonic() >= self._remote_down_until:
            try:
                return action(self._remote)
            except StorageError as exc:
                if self._remote_down_until == 0.0:  # once per outage, not once per request
                    log.warning("Redis unreachable for rate limits, counting in this process for now: %s",
                                exc.storage_error)
                self._remote_down_until = time.monotonic() + REDIS_RETRY_SECONDS
                return action(self._memory)
            self._remote_down_until = 0.0
        return action(self._memory)

    def blocked(self, item: RateLimitItemPerMinute, *keys: str) -> int:
        """Seconds to wait when ``keys`` have used up ``item``; 0 when free to try."""
        def wait(limiter: strategies.MovingWindowRateLimiter) -> int:
            if limiter.test(item, *keys):
                return 0
            reset_at, _remaining = limiter.get_window_stats(item, *keys)
            return max(1, math.ceil(reset_at - time.time()))
        return self._use(wait)

    def failed(self, item: RateLimitItemPerMinute, *keys: str) -> None:
        self._use(lambda limiter: limiter.hit(item, *keys))

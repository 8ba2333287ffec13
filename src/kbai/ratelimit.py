"""Rate limits on failures (token authentication per IP; logins per IP and per account).

Backed by the ``limits`` library: in-process memory by default, Redis when KBAI_REDIS_URL is set
so every instance shares the same counters.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute, storage, strategies


class FailureLimiter:
    def __init__(self, redis_url: str | None, prefix: str, auth_per_minute: int, login_per_minute: int) -> None:
        if redis_url:
            backend: storage.Storage = storage.storage_from_string(redis_url, key_prefix=f"{prefix}:limits")
        else:
            backend = storage.MemoryStorage()
        self.storage = backend
        # In-process counters answer without I/O, so they may be consulted on an event loop.
        self.local = not redis_url
        self._limiter = strategies.MovingWindowRateLimiter(backend)
        self.auth = RateLimitItemPerMinute(auth_per_minute)
        self.login = RateLimitItemPerMinute(login_per_minute)

    def blocked(self, item: RateLimitItemPerMinute, *keys: str) -> int:
        """Seconds to wait when ``keys`` have used up ``item``; 0 when free to try."""
        if self._limiter.test(item, *keys):
            return 0
        reset_at, _remaining = self._limiter.get_window_stats(item, *keys)
        return max(1, math.ceil(reset_at - time.time()))

    def failed(self, item: RateLimitItemPerMinute, *keys: str) -> None:
        self._limiter.hit(item, *keys)

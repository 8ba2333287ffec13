"""The invalidation bus: tells every instance which cached verdicts to drop.

``LocalBus`` is for one process (nothing to tell). ``RedisBus`` publishes on a Redis channel and
runs a subscriber thread; while it is not subscribed (start-up, lost connection) it reports
unhealthy, and the cache is bypassed so no instance can serve a verdict it may have missed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("kbai.cache")

ALL = "*"
Handler = Callable[[str], None]


class Bus(Protocol):
    def publish(self, message: str) -> None: ...
    def start(self, handler: Handler, wait_seconds: float = 5.0) -> None: ...
    def stop(self) -> None: ...
    @property
    def healthy(self) -> bool: ...


class LocalBus:
    healthy = True

    def publish(self, message: str) -> None:
        pass

    def start(self, handler: Handler, wait_seconds: float = 5.0) -> None:
        pass

    def stop(self) -> None:
        pass


class RedisBus:
    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.channel = f"{prefix}:invalidate"
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                           health_check_interval=10)
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handler: Handler | None = None

    @property
    def healthy(self) -> bool:
        return self._subscribed.is_set()

    def publish(self, message: str) -> None:
        try:
            self._redis.publish(self.channel, message)
        except Exception:  # noqa: BLE001 - other instances fall back to bypass when we can't reach Redis
            log.warning("could not publish a cache invalidation to Redis")

    def start(self, handler: Handler, wait_seconds: float = 5.0) -> None:
        """Subscribe in the background; wait up to ``wait_seconds`` for the subscription to be live."""
        if self._thread is not None:
            return
        self._handler = handler
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kbai-invalidation", daemon=True)
        self._thread.start()
        self._subscribed.wait(timeout=wait_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self._subscribed.clear()

    def _run(self) -> None:
        assert self._handler is not None
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                # Anything published while we were not listening is lost: start from an empty cache.
                self._handler(ALL)
                self._subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self._handler(data.decode() if isinstance(data, bytes) else str(data))
            except Exception:  # noqa: BLE001 - reconnect below
                if self._subscribed.is_set():
                    log.warning("lost the Redis invalidation channel; bypassing the cache until it is back")
                self._subscribed.clear()
                self._stop.wait(0.5)
            finally:
                self._subscribed.clear()
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass

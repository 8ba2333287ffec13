"""The invalidation bus: tells every process which cached verdicts to drop (and which client
addresses the failure limiter has just blocked).

One implementation per deployment, chosen by :func:`for_settings`:

* ``RedisBus`` (``KBAI_REDIS_URL`` set): Redis pub/sub.
* ``PostgresBus`` (PostgreSQL without Redis): ``LISTEN``/``NOTIFY`` on a connection of its own.
* ``DatabaseBus`` (a SQLite file): a table every process polls a few times a second (``PRAGMA
  data_version`` first, so an idle poll reads nothing), on a connection of its own.
* ``LocalBus`` (an in-memory database, one process by definition): nothing to tell.

Each is **healthy** only while it is listening: until it has subscribed (start-up) and whenever the
connection is lost, it reports unhealthy and the cache is bypassed, so no process can serve a
verdict it may have missed; on (re)subscribing it clears the cache, since whatever was published
meanwhile is lost. A bus that was never started (the CLI, an SDK verifier used without its
lifespan) is not listening at all: the cache then keeps entries only ``KBAI_CACHE_TTL_SECONDS``.
Publishing works whether or not the bus was started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kbai.config import Settings
    from kbai.store import Database

log = logging.getLogger("kbai.cache")

ALL = "*"
Handler = Callable[[str], None]
PG_CHANNEL = "kbai_invalidate"
PG_APPLICATION_NAME = "kbai-invalidation pid {pid}"  # finds a process's listening connection in pg_stat_activity
PG_PAYLOAD_BYTES = 7900  # NOTIFY payloads are limited to 8000 bytes; several messages share one
POLL_SECONDS = 0.1  # DatabaseBus: how often each process looks for new messages
KEEP_MESSAGES = timedelta(minutes=10)  # DatabaseBus: older rows are pruned by the next publisher
RETRY_SECONDS = 0.5
LIVENESS_SECONDS = 5.0  # PostgresBus: a silent connection is probed this often


class Bus(Protocol):
    def publish(self, message: str) -> None: ...
    def publish_many(self, messages: Iterable[str]) -> None: ...
    def publish_later(self, message: str) -> None: ...
    def start(self, handler: Handler, wait_seconds: float = 5.0) -> None: ...
    def stop(self) -> None: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def started(self) -> bool: ...


class LocalBus:
    healthy = True
    started = True

    def publish(self, message: str) -> None:
        pass

    def publish_many(self, messages: Iterable[str]) -> None:
        pass

    def publish_later(self, message: str) -> None:
        pass

    def start(self, handler: Handler, wait_seconds: float = 5.0) -> None:
        pass

    def stop(self) -> None:
        pass


class _Listener:
    """The background half every real bus shares: a thread that (re)connects, announces ALL on each
    (re)subscription, delivers messages, and keeps the healthy flag true only while it listens."""

    name = "bus"

    def __init__(self) -> None:
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handler: Handler | None = None
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._sender_lock = threading.Lock()

    def publish_many(self, messages: Iterable[str]) -> None:
        raise NotImplementedError

    def publish_later(self, message: str) -> None:
        """Publish from a background thread: for callers on an event loop, which must not wait for I/O."""
        with self._sender_lock:
            if self._sender is None:
                self._sender = threading.Thread(target=self._send, name="kbai-invalidation-publisher", daemon=True)
                self._sender.start()
        self._outbox.put(message)

    def _send(self) -> None:
        while True:
            message = self._outbox.get()
            if message is None:
                return
            batch = [message]
            while True:  # whatever queued up meanwhile goes out in the same batch
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.publish_many(batch)
                    return
                batch.append(more)
            self.publish_many(batch)

    def _stop_sender(self) -> None:
        with self._sender_lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            self._outbox.put(None)
            sender.join(timeout=5)

    @property
    def healthy(self) -> bool:
        return self._subscribed.is_set()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self, handler: Handler, wait_seconds: float = 5.0) -> None:
        """Listen in the background; wait up to ``wait_seconds`` for the subscription to be live."""
        if self._thread is not None:
            return
        self._handler = handler
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kbai-invalidation", daemon=True)
        self._thread.start()
        self._subscribed.wait(timeout=wait_seconds)

    def stop(self) -> None:
        self._stop_sender()  # what is still queued goes out first
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self._subscribed.clear()

    def _deliver(self, message: str) -> None:
        assert self._handler is not None
        try:
            self._handler(message)
        except Exception:  # one bad message must not stop the listener
            log.exception("could not apply an invalidation message")

    def _subscribed_now(self) -> None:
        # Anything published while we were not listening is lost: start from an empty cache.
        self._deliver(ALL)
        if not self._subscribed.is_set():
            log.info("listening for cache invalidations (%s)", self.name)
        self._subscribed.set()

    def _lost(self) -> None:
        if self._subscribed.is_set():
            log.warning("lost the %s invalidation channel; bypassing the cache until it is back", self.name)
        self._subscribed.clear()
        self._stop.wait(RETRY_SECONDS)

    def _run(self) -> None:
        raise NotImplementedError


class RedisBus(_Listener):
    name = "Redis"

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        super().__init__()
        self.channel = f"{prefix}:invalidate"
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10)

    def publish(self, message: str) -> None:
        self.publish_many([message])

    def publish_many(self, messages: Iterable[str]) -> None:
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for message in messages:
                    pipe.publish(self.channel, message)
                pipe.execute()
        except Exception:  # noqa: BLE001 - other instances fall back to bypass when we can't reach Redis
            log.warning("could not publish a cache invalidation to Redis")

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._subscribed_now()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self._deliver(data.decode() if isinstance(data, bytes) else str(data))
            except Exception:  # noqa: BLE001 - reconnect
                self._lost()
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):  # the connection is gone already; closing is tidying up
                    pubsub.close()


class PostgresBus(_Listener):
    """``NOTIFY kbai_invalidate`` to publish; a dedicated autocommit connection ``LISTEN``s."""

    name = "PostgreSQL"

    def __init__(self, db: Database) -> None:
        from sqlalchemy.engine import make_url

        super().__init__()
        self._db = db
        url = make_url(db.url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)

    def publish(self, message: str) -> None:
        self.publish_many([message])

    def publish_many(self, messages: Iterable[str]) -> None:
        from sqlalchemy import text

        payloads: list[str] = []
        for message in messages:
            if payloads and len(payloads[-1]) + 1 + len(message) <= PG_PAYLOAD_BYTES:
                payloads[-1] += "\n" + message
            else:
                payloads.append(message)
        if not payloads:
            return
        try:
            with self._db.single_engine.connect() as conn:  # autocommit: delivered at once
                for payload in payloads:
                    conn.execute(
                        text("SELECT pg_notify(:channel, :payload)"), {"channel": PG_CHANNEL, "payload": payload}
                    )
        except Exception:  # noqa: BLE001 - the change itself is committed; others bypass while unreachable
            log.warning("could not publish a cache invalidation on PostgreSQL")

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            conn: Any = None
            try:
                conn = psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    application_name=PG_APPLICATION_NAME.format(pid=os.getpid()),
                )
                conn.execute(f"LISTEN {PG_CHANNEL}")
                self._subscribed_now()
                probed = time.monotonic()
                while not self._stop.is_set():
                    for notify in conn.notifies(timeout=0.2, stop_after=100):
                        for message in notify.payload.split("\n"):
                            self._deliver(message)
                    if time.monotonic() - probed > LIVENESS_SECONDS:  # a dead peer may send nothing
                        conn.execute("SELECT 1")
                        probed = time.monotonic()
            except Exception:  # noqa: BLE001 - reconnect
                self._lost()
            finally:
                self._subscribed.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):  # the connection is gone already; closing is tidying up
                        conn.close()


class DatabaseBus(_Listener):
    """SQLite: messages are rows of ``bus_messages``; each process polls for rows newer than its last."""

    name = "SQLite"

    def __init__(self, db: Database, path: str, *, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__()
        self._db = db
        self._path = path
        self.poll_seconds = poll_seconds

    def publish(self, message: str) -> None:
        self.publish_many([message])

    def publish_many(self, messages: Iterable[str]) -> None:
        from sqlalchemy import delete, insert

        from kbai.store.models import BusMessage

        now = datetime.now(UTC).replace(microsecond=0)
        rows = [{"message": m, "created_at": now} for m in messages]
        if not rows:
            return
        try:
            with self._db.write() as s:
                s.execute(insert(BusMessage), rows)
                s.execute(delete(BusMessage).where(BusMessage.created_at < now - KEEP_MESSAGES))
        except Exception:  # noqa: BLE001 - the change itself is committed; say so loudly
            log.error(
                "could not publish a cache invalidation to the other processes; they may serve "
                "a cached verdict for up to KBAI_CACHE_MAX_AGE_SECONDS"
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            conn: sqlite3.Connection | None = None
            try:
                conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA query_only=ON")
                last = conn.execute("SELECT coalesce(max(id), 0) FROM bus_messages").fetchone()[0]
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                self._subscribed_now()
                while not self._stop.wait(self.poll_seconds):
                    seen = conn.execute("PRAGMA data_version").fetchone()[0]
                    if seen == version:
                        continue  # nobody else has committed anything since the last look
                    version = seen
                    for row_id, message in conn.execute(
                        "SELECT id, message FROM bus_messages WHERE id > ? ORDER BY id", (last,)
                    ).fetchall():
                        last = row_id
                        self._deliver(message)
            except Exception:  # noqa: BLE001 - reopen
                self._lost()
            finally:
                self._subscribed.clear()
                if conn is not None:
                    conn.close()


def for_settings(settings: Settings, db: Database) -> Bus:
    """The bus of this deployment: Redis when configured, else the database's own."""
    if settings.redis_url:
        return RedisBus(settings.redis_url, settings.redis_prefix)
    if not db.is_sqlite:
        return PostgresBus(db)
    path = db.sqlite_path
    if path is None:  # in memory: one process, nobody to tell
        return LocalBus()
    return DatabaseBus(db, path)

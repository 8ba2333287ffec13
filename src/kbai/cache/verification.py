"""An in-process cache of verification records, exact under concurrent invalidation."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from kbai.tokens.verify import TokenRecord

Loader = Callable[[str], TokenRecord | None]


class VerificationCache:
    """digest -> (record or None, stored at). Thread-safe; bounded by ``max_entries`` (LRU).

    A load that overlaps an invalidation is not stored: every invalidation bumps a generation
    number, and a result is only kept if the generation is the one seen before loading.
    """

    def __init__(self, loader: Loader, *, ttl_seconds: float, negative_ttl_seconds: float,
                 max_entries: int = 100_000, enabled: Callable[[], bool] | None = None) -> None:
        self._loader = loader
        self.ttl = ttl_seconds
        self.negative_ttl = negative_ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[TokenRecord | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0
        self._enabled = enabled or (lambda: True)
        self.hits = 0
        self.misses = 0

    def lookup(self, digest: str) -> TokenRecord | None:
        if self._enabled():
            now = time.monotonic()
            entry = self._entries.get(digest)
            if entry is not None:
                record, stored = entry
                if now - stored < (self.ttl if record is not None else self.negative_ttl):
                    self.hits += 1
                    return record
        self.misses += 1
        generation = self._generation
        record = self._loader(digest)
        if self._enabled() and (self.ttl > 0 if record is not None else self.negative_ttl > 0):
            with self._lock:
                if generation == self._generation:
                    self._entries[digest] = (record, time.monotonic())
                    self._entries.move_to_end(digest)
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
        return record

    def peek(self, digest: str) -> tuple[bool, TokenRecord | None]:
        """(True, record) on a fresh hit, (False, None) otherwise. Never loads: safe on an event loop."""
        if not self._enabled():
            return False, None
        entry = self._entries.get(digest)
        if entry is None:
            return False, None
        record, stored = entry
        if time.monotonic() - stored >= (self.ttl if record is not None else self.negative_ttl):
            return False, None
        self.hits += 1
        return True, record

    def invalidate(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._generation += 1
            for d in digests:
                self._entries.pop(d, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

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

    How long an entry may be reused is asked of ``max_age()`` on every lookup: seconds, or None to
    bypass the cache (neither read nor filled), e.g. while the invalidation channel is down. Without
    ``max_age`` it is ``ttl_seconds`` while ``enabled()`` holds. Unknown digests are kept at most
    ``negative_ttl_seconds``.

    A load that overlaps an invalidation is not stored: every invalidation bumps a generation
    number, and a result is only kept if the generation is the one seen before loading.
    """

    def __init__(
        self,
        loader: Loader,
        *,
        ttl_seconds: float = 0.0,
        negative_ttl_seconds: float,
        max_entries: int = 100_000,
        enabled: Callable[[], bool] | None = None,
        max_age: Callable[[], float | None] | None = None,
    ) -> None:
        self._loader = loader
        self.ttl = ttl_seconds
        self.negative_ttl = negative_ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[TokenRecord | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0
        if max_age is None:
            is_enabled = enabled or (lambda: True)

            def max_age() -> float | None:
                return self.ttl if is_enabled() else None

        self._max_age = max_age
        self.hits = 0
        self.misses = 0

    def _fresh(self, record: TokenRecord | None, stored: float, max_age: float) -> bool:
        age = time.monotonic() - stored
        return age < (max_age if record is not None else self.negative_ttl)

    def lookup(self, digest: str) -> TokenRecord | None:
        max_age = self._max_age()
        if max_age is not None:
            entry = self._entries.get(digest)
            if entry is not None and self._fresh(entry[0], entry[1], max_age):
                self.hits += 1
                return entry[0]
        self.misses += 1
        generation = self._generation
        record = self._loader(digest)
        max_age = self._max_age()
        if max_age is not None and (max_age > 0 if record is not None else self.negative_ttl > 0):
            with self._lock:
                if generation == self._generation:
                    self._entries[digest] = (record, time.monotonic())
                    self._entries.move_to_end(digest)
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
        return record

    def peek(self, digest: str) -> tuple[bool, TokenRecord | None]:
        """(True, record) on a fresh hit, (False, None) otherwise. Never loads: safe on an event loop."""
        max_age = self._max_age()
        if max_age is None:
            return False, None
        entry = self._entries.get(digest)
        if entry is None or not self._fresh(entry[0], entry[1], max_age):
            return False, None
        self.hits += 1
        return True, entry[0]

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

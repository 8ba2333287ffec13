"""Prometheus metrics. Labels never carry a token, a name or an email: only outcomes, routes and codes."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The standard process_* (CPU, memory, open files, start time), python_info and python_gc_* series.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.verifications = Counter(
            "kbai_token_verifications", "Token verifications by outcome.", ["outcome"], registry=self.registry
        )
        self.last_used_writes = Counter(
            "kbai_last_used_writes", "Rows written by last-used flushes.", registry=self.registry
        )
        self.last_used_flushes = Counter(
            "kbai_last_used_flushes", "Last-used flushes that wrote at least one row.", registry=self.registry
        )
        self.rate_limited = Counter(
            "kbai_rate_limited", "Requests refused by a failure rate limit.", ["kind"], registry=self.registry
        )
        self.requests = Histogram(
            "kbai_http_request_duration_seconds",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.channel_up = Gauge(
            "kbai_invalidation_channel_up",
            "1 while this process listens for cache invalidations "
            "(Redis, PostgreSQL LISTEN or the SQLite poller); 0 means its cache is bypassed or not yet in use.",
            registry=self.registry,
        )
        # Labelled children, looked up once each: .labels() takes a lock and builds a key on every call.
        self._verified: dict[str, Any] = {}
        self._served: dict[tuple[str, str, int], Any] = {}

    def verified(self, outcome: str) -> None:
        child = self._verified.get(outcome)
        if child is None:
            child = self._verified[outcome] = self.verifications.labels(outcome)
        child.inc()

    def served(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._served.get(key)
        if child is None:
            if len(self._served) > 10_000:  # methods are the client's text: bound what they can make us keep
                self._served.clear()
            child = self._served[key] = self.requests.labels(method, route, str(status))
        child.observe(seconds)

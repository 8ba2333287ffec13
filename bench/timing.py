"""Timing and statistics shared by the kbai side and the peers' venv: standard library only.

Per-call times come from ``time.perf_counter_ns`` around each call, minus the cost of timing an
empty call (measured the same way, in the same process, just before). Calls too short for that to
be meaningful (a bare SHA-256) are timed in batches and reported per call.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile of already-sorted values (p in 0..100)."""
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return float(sorted_values[lo])
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize_ns(samples_ns: Sequence[float]) -> dict[str, Any]:
    """n, median, p99, mean, min, max of per-call samples, in microseconds."""
    values = sorted(samples_ns)
    return {
        "n": len(values),
        "median_us": round(percentile(values, 50) / 1000, 3),
        "p99_us": round(percentile(values, 99) / 1000, 3),
        "mean_us": round(statistics.fmean(values) / 1000, 3) if values else math.nan,
        "min_us": round(values[0] / 1000, 3) if values else math.nan,
        "max_us": round(values[-1] / 1000, 3) if values else math.nan,
    }


def _noop(_: Any) -> None:
    return None


def timer_overhead_ns(rounds: int = 20_000) -> float:
    """Median cost of timing one empty call the way :func:`time_calls` times a real one."""
    pc = time.perf_counter_ns
    samples = []
    fn = _noop
    for i in range(rounds):
        t0 = pc()
        fn(i)
        samples.append(pc() - t0)
    samples.sort()
    return percentile(samples, 50)


def time_calls(
    fn: Callable[[Any], Any], args: Sequence[Any], calls: int, overhead_ns: float = 0.0, warmup: int = 0
) -> list[float]:
    """Time ``calls`` calls of ``fn(arg)``, cycling through ``args``; per-call ns minus ``overhead_ns``.

    The garbage collector stays enabled: it runs in production too, and its pauses belong in p99.
    """
    pc = time.perf_counter_ns
    n = len(args)
    for i in range(warmup):
        fn(args[i % n])
    samples = [0.0] * calls
    for i in range(calls):
        a = args[i % n]
        t0 = pc()
        fn(a)
        samples[i] = max(0.0, pc() - t0 - overhead_ns)
    return samples


def time_batched(fn: Callable[[Any], Any], args: Sequence[Any], batches: int, batch_size: int) -> list[float]:
    """Per-call ns for very short calls: each sample is one batch of ``batch_size`` calls, divided."""
    pc = time.perf_counter_ns
    n = len(args)
    samples = []
    loop_args = [args[i % n] for i in range(batch_size)]
    # The cost of the loop itself, subtracted like the timer overhead in time_calls.
    t0 = pc()
    for a in loop_args:
        _noop(a)
    empty = pc() - t0
    for _ in range(batches):
        t0 = pc()
        for a in loop_args:
            fn(a)
        samples.append(max(0.0, (pc() - t0 - empty)) / batch_size)
    return samples


def interleaved(variants: dict[str, Callable[[], list[float]]], rounds: int) -> dict[str, list[float]]:
    """Run each variant ``rounds`` times, round-robin, pooling samples: noise bursts on a shared
    machine then hit every variant alike instead of one of them."""
    pooled: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            gc.collect()
            pooled[name].extend(run())
    return pooled

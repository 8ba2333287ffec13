"""The failed-token-authentication limiter on its own: counts failures, blocks only failing attempts,
and shares a block with other instances through the message it publishes (in memory; the Redis-backed
and multi-process behaviour is tested over real servers in tests/web/test_rate_limit.py)."""

from __future__ import annotations

import time

from kbai.ratelimit import FailureLimiter, TokenFailures

LIMIT = 3


def limiter(published: list[str] | None = None) -> TokenFailures:
    return TokenFailures(
        FailureLimiter(None, "t", LIMIT, 10), LIMIT, publish=published.append if published is not None else None
    )


def test_the_limit_is_counted_in_failures_and_then_blocks() -> None:
    published: list[str] = []
    failures = limiter(published)
    assert failures.local
    assert [failures.failed("198.51.100.1") for _ in range(LIMIT)] == [0] * LIMIT  # answered as failures
    assert failures.blocked("198.51.100.1") >= 1
    wait = failures.failed("198.51.100.1")
    assert 1 <= wait <= 60
    assert failures.blocked("198.51.100.2") == 0  # another address is not affected
    assert len(published) == 1 and published[0].startswith("block ") and published[0].endswith(" 198.51.100.1")


def test_a_block_message_blocks_another_instance_without_counting() -> None:
    published: list[str] = []
    a, b = limiter(published), limiter()
    for _ in range(LIMIT):
        a.failed("2001:db8::7")
    assert b.blocked("2001:db8::7") == 0
    assert b.on_message(published[0])
    assert b.blocked("2001:db8::7") >= 1
    assert b.failed("2001:db8::7") >= 1
    assert not b.on_message("a" * 64)  # a cache invalidation is not a block
    assert not b.on_message("*")


def test_blocks_end_and_malformed_messages_are_ignored() -> None:
    failures = limiter()
    failures.note_blocked("203.0.113.5", time.time() - 1)
    assert failures.blocked("203.0.113.5") == 0
    assert failures.on_message("block soon 203.0.113.6")
    assert failures.blocked("203.0.113.6") == 0

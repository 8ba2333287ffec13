"""Write coalescing: uses are buffered, and one flush writes last-used and hourly counts in a batch."""

from __future__ import annotations

from datetime import timedelta, timezone

from sqlalchemy import event, select

from kbai.clock import FrozenClock
from kbai.store.models import Token, TokenUsageHour
from tests.conftest import World


def test_flush_writes_last_used_and_hourly_counts(world: World, clock: FrozenClock) -> None:
    svc = world.services
    a, _ = svc.tokens.create(world.dev, "a", [])
    b, _ = svc.tokens.create(world.dev, "b", [])
    start = clock.now().replace(minute=59, second=0)
    statements: list[str] = []
    event.listen(svc.db.engine, "before_cursor_execute", lambda c, cur, stmt, *rest: statements.append(stmt))
    for i in range(300):
        svc.usage.record(a.id, start + timedelta(seconds=i // 2))  # 60 s of it in the next hour
    svc.usage.record(b.id, start)
    assert statements == [], "recording a use must not touch the database"
    assert svc.usage.flush() == 2
    writes = [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "INSERT"))]
    assert len(writes) == 3  # one UPDATE per token + one batched upsert of the counts
    with svc.db.read() as s:
        last = dict(s.execute(select(Token.id, Token.last_used_at)).all())
        rows = {(r.token_id, r.hour): r.requests for r in s.scalars(select(TokenUsageHour))}
    assert last[a.id] == start + timedelta(seconds=149)
    assert rows == {
        (a.id, start.replace(minute=0)): 120,
        (a.id, start.replace(minute=0) + timedelta(hours=1)): 180,
        (b.id, start.replace(minute=0)): 1,
    }
    # A second flush for the same hour adds up (several instances, or several intervals).
    svc.usage.record(b.id, start)
    svc.usage.flush()
    with svc.db.read() as s:
        assert s.scalar(select(TokenUsageHour.requests).where(TokenUsageHour.token_id == b.id)) == 2


def test_last_used_never_moves_backwards(world: World, clock: FrozenClock) -> None:
    svc = world.services
    t, _ = svc.tokens.create(world.dev, "t", [])
    svc.usage.record(t.id, clock.now())
    svc.usage.flush()
    svc.usage.record(t.id, clock.now() - timedelta(minutes=5))  # a slower instance flushing late
    svc.usage.flush()
    with svc.db.read() as s:
        assert s.scalar(select(Token.last_used_at).where(Token.id == t.id)) == clock.now().replace(microsecond=0)


def test_sub_second_times_across_an_hour_in_any_offset_and_order_land_in_their_utc_hour(
    world: World, clock: FrozenClock
) -> None:
    """The buffer converts a use's time once per second (later uses in that second reuse it): times a few
    microseconds either side of an hour, given in another UTC offset and out of order, still count in their own
    UTC hour, and Last used is the latest use to the second."""
    svc = world.services
    t, _ = svc.tokens.create(world.dev, "t", [])
    hour = clock.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    plus_two = timezone(timedelta(hours=2))
    uses = [
        hour - timedelta(microseconds=1),  # the last microsecond of the hour before
        hour,
        (hour + timedelta(microseconds=999_999)).astimezone(plus_two),  # the same second, as another zone says it
        hour - timedelta(seconds=1, microseconds=-500_000),  # out of order, back in the hour before
        (hour + timedelta(seconds=1)).astimezone(plus_two),
        hour - timedelta(microseconds=2),
    ]
    for at in uses:
        svc.usage.record(t.id, at)
    svc.usage.flush()
    with svc.db.read() as s:
        rows = {r.hour: r.requests for r in s.scalars(select(TokenUsageHour).where(TokenUsageHour.token_id == t.id))}
        last = s.scalar(select(Token.last_used_at).where(Token.id == t.id))
    assert rows == {hour - timedelta(hours=1): 3, hour: 3}
    assert last == hour + timedelta(seconds=1)

"""kbai.tokens.limits on one instance, both backends: under concurrent requests a quota and a rate limit
admit exactly their amount (shares taken in the background and by the requests themselves never lose or
double a unit), a warm admission does no I/O, and a graceful stop gives unspent quota back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from kbai.services import Services
from kbai.store.models import Token
from kbai.tokenformat import digest
from tests.conftest import World
from tests.gateway.test_warm_io import sql_statements


def _record(services: Services, world: World, **limits: object):
    _, plaintext = services.tokens.create(world.dev, "limited", ["users.read"], **limits)
    record = services.tokens.load_record(digest(plaintext))
    assert record is not None and record.limited
    return record


def _admit_many(services: Services, record, n: int) -> list[object]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: services.limits.admit(record), range(n)))


@pytest.mark.parametrize("amount", [7, 50, 400])
def test_a_quota_admits_exactly_its_amount_under_concurrent_requests(
    services: Services, world: World, amount: int
) -> None:
    record = _record(services, world, quota={"remaining": amount})
    answers = _admit_many(services, record, amount + 60)
    admitted = [a for a in answers if a.error is None]  # type: ignore[attr-defined]
    refused = [a for a in answers if a.error is not None]  # type: ignore[attr-defined]
    assert len(admitted) == amount
    assert {a.error.code for a in refused} == {"quota_exhausted"}  # type: ignore[attr-defined]
    # Every remaining figure was given out once: amount-1 down to 0.
    assert sorted(a.quota_remaining for a in admitted) == list(range(amount))  # type: ignore[attr-defined]


@pytest.mark.parametrize("amount", [3, 40])
def test_a_rate_limit_admits_exactly_its_amount_in_a_window(services: Services, world: World, amount: int) -> None:
    record = _record(services, world, rate_limit={"requests": amount, "per": "hour"})
    answers = _admit_many(services, record, amount + 30)
    assert sum(1 for a in answers if a.error is None) == amount  # type: ignore[attr-defined]


def test_a_warm_admission_does_no_io_and_a_stop_gives_unspent_quota_back(services: Services, world: World) -> None:
    record = _record(services, world, quota={"remaining": 1000})
    first = services.limits.admit(record)  # takes a share of 50
    assert first is not None and first.quota_remaining == 999
    with sql_statements() as sql:
        warm = [services.limits.admit(record, warm_only=True) for _ in range(10)]
    assert sql == [] and all(w is not None and w.error is None for w in warm)
    assert warm[-1].quota_remaining == 989  # type: ignore[union-attr]
    services.limits.close()
    with services.db.read() as s:
        assert s.scalar(select(Token.quota_remaining).where(Token.id == record.token_id)) == 989


def test_a_record_read_before_its_quota_was_removed_is_never_refused_on_the_old_setting(
    services: Services, world: World
) -> None:
    """Between a PATCH and the invalidation reaching an instance, a stale record still says "quota": when the
    stored quota is gone (or set anew), the request is served, not refused as exhausted."""
    record = _record(services, world, quota={"remaining": 1})
    first = services.limits.admit(record)
    assert first is not None and first.error is None
    services.tokens.update(world.dev, record.token_id, {"quota": None})
    stale = services.limits.admit(record)  # the old record, its share spent, the quota removed meanwhile
    assert stale is not None and stale.error is None

"""Rule 7: the active-token limit holds under concurrency, on SQLite and on PostgreSQL.

30 parallel creates for a user who holds 9 active tokens produce exactly one new token, whether the
creates come from 30 threads sharing one Services or from 30 separate OS processes (spawned, each
with its own engine, as several ``kbai serve`` instances would be).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from queue import Empty

from sqlalchemy import func, select

from kbai.config import Settings
from kbai.errors import KbaiError
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.store.models import Token
from tests.conftest import World, build_world
from tests.tokens import _mp_worker
from tests.tokens.helpers import active_in_db, make_tokens

PARALLEL = 30


def _race_threads(world: World, names: list[str]) -> Counter[str]:
    svc = world.services
    barrier = threading.Barrier(len(names))
    outcomes: list[str] = []
    lock = threading.Lock()

    def create(name: str) -> None:
        barrier.wait(timeout=60)
        try:
            svc.tokens.create(world.dev, name, [])
            result = "ok"
        except KbaiError as exc:
            result = exc.code
        except Exception as exc:  # noqa: BLE001 - counted as a failure below
            result = f"unexpected {type(exc).__name__}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=create, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return Counter(outcomes)


def _rows(svc: Services, user_id: int) -> tuple[int, int]:
    """(all token rows, rows that were never revoked) of a user: counted in the table itself."""
    with svc.db.read() as s:
        total = s.scalar(select(func.count(Token.id)).where(Token.user_id == user_id))
        unrevoked = s.scalar(select(func.count(Token.id)).where(Token.user_id == user_id, Token.revoked_at.is_(None)))
    return int(total or 0), int(unrevoked or 0)


def test_thirty_threads_create_one_token_past_nine(world: World) -> None:
    svc = world.services
    existing = make_tokens(svc, world.dev, 9)
    outcomes = _race_threads(world, [f"thread-{i}" for i in range(PARALLEL)])
    assert outcomes == Counter({"ok": 1, "token_limit_reached": PARALLEL - 1})
    assert active_in_db(svc, world.dev.user_id) == 10
    assert _rows(svc, world.dev.user_id) == (10, 10)

    # Again after freeing one slot: still exactly one winner.
    svc.tokens.revoke(world.dev, existing[0].id)
    outcomes = _race_threads(world, [f"round2-{i}" for i in range(PARALLEL)])
    assert outcomes == Counter({"ok": 1, "token_limit_reached": PARALLEL - 1})
    assert active_in_db(svc, world.dev.user_id) == 10
    assert _rows(svc, world.dev.user_id) == (11, 10)


def test_thirty_threads_with_the_same_name_create_one_token(world: World) -> None:
    svc = world.services
    outcomes = _race_threads(world, ["Zapier production"] * PARALLEL)
    assert outcomes == Counter({"ok": 1, "name_taken": PARALLEL - 1})
    assert _rows(svc, world.dev.user_id) == (1, 1)


def test_thirty_processes_create_one_token_past_nine(settings: Settings) -> None:
    # The real system clock everywhere: the 9 existing tokens never expire, so clock skew can't matter.
    svc = Services.build(settings)
    try:
        world = build_world(svc)
        make_tokens(svc, world.dev, 9)  # no expiry
        assert active_in_db(svc, world.dev.user_id) == 9
        actor = Actor(
            kind="user",
            user_id=world.dev.user_id,
            tenant_id=world.tenant_id,
            email=world.dev.email,
            permissions=world.dev.permissions,
        )

        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(PARALLEL)
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=_mp_worker.create_one, args=(settings.database_url, actor, f"process-{i}", barrier, results)
            )
            for i in range(PARALLEL)
        ]
        for p in procs:
            p.start()
        outcomes: Counter[str] = Counter()
        try:
            for _ in procs:
                _name, outcome = results.get(timeout=180)
                outcomes[outcome] += 1
        except Empty:
            pass
        for p in procs:
            p.join(timeout=60)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        assert outcomes == Counter({"ok": 1, "token_limit_reached": PARALLEL - 1})
        assert all(p.exitcode == 0 for p in procs)
        assert active_in_db(svc, world.dev.user_id) == 10
        assert _rows(svc, world.dev.user_id) == (10, 10)
    finally:
        svc.close()

"""Section 3: PostgreSQL at scale (1,000,000 tokens across 10,000 tenants; ``--quick``: 20,000 / 200).

The data is bulk-loaded with COPY (bench/seed.py) into a database the bench creates and drops.
Then, interleaved round by round, through the real TokenService with the cache disabled:
- cold verification of sampled active tokens (``TokenService.verify`` -> ``load_record``);
- the token list of a random user (``TokenService.list``, the first page of 100);
- creation under the limit check (``TokenService.create``: lock the user, permissions, count the
  active tokens, insert, audit, commit), each on a different user who is under the limit.
"""

from __future__ import annotations

import random
from typing import Any

import seed
import timing
from common import FAST_ARGON2, log, scratch_pg


def run(quick: bool) -> dict[str, Any]:
    from kbai.config import Settings
    from kbai.services import Services
    from kbai.store.audit import Actor

    tokens, tenants = (20_000, 200) if quick else (1_000_000, 10_000)
    rounds = 3 if quick else 5
    verify_calls, list_calls, create_calls = (200, 150, 40) if quick else (1_000, 600, 150)
    out: dict[str, Any] = {
        "tokens": tokens,
        "tenants": tenants,
        "rounds": rounds,
        "calls_per_round": {"verify": verify_calls, "list": list_calls, "create": create_calls},
    }
    with scratch_pg("scale") as url:
        ds = seed.load(url, tokens, tenants, sample_size=max(2_000, verify_calls))
        out["users"] = ds.users
        out["load_seconds"] = ds.load_seconds
        svc = Services.build(Settings(database_url=url, cache_ttl_seconds=0, negative_cache_seconds=0, **FAST_ARGON2))
        with svc.db.engine.connect() as conn:
            out["tokens_table_mb"] = round(
                conn.exec_driver_sql("SELECT pg_total_relation_size('tokens')").scalar_one() / 2**20, 1
            )
        rng = random.Random(42)
        sample = [s.token for s in ds.sample]
        list_users = [rng.randrange(1, ds.users + 1) for _ in range(list_calls)]
        # Every creation on a user nobody created for yet: each holds 7 active tokens, the limit is 10.
        creators = rng.sample(range(1, ds.users + 1), create_calls * (rounds + 1))
        actors = []
        for uid in creators:
            tenant_id, email = ds.user(uid)
            actors.append(
                Actor(
                    kind="user",
                    user_id=uid,
                    tenant_id=tenant_id,
                    email=email,
                    permissions=frozenset(seed.DEV_PERMISSIONS),
                )
            )
        pending = iter(actors)
        assert svc.tokens.verify(sample[0]).ok
        assert len(svc.tokens.list(list_users[0])) == seed.TOKENS_PER_USER

        def create(actor: Actor) -> None:
            svc.tokens.create(actor, "bench create", ["users.read"], expires_in_days=90)

        import psycopg

        pg_conn = psycopg.connect(url, autocommit=True)

        def pg_round_trip(_: object) -> None:
            pg_conn.execute("SELECT 1").fetchone()

        overhead = timing.timer_overhead_ns()
        # warm-up of each operation (connection pool, statement caches), not measured
        timing.time_calls(svc.tokens.verify, sample, 50)
        timing.time_calls(svc.tokens.list, list_users, 50)
        timing.time_calls(create, [next(pending) for _ in range(create_calls)], create_calls)
        variants = {
            "verify_cold": lambda: timing.time_calls(svc.tokens.verify, sample, verify_calls, overhead),
            "list": lambda: timing.time_calls(svc.tokens.list, list_users, list_calls, overhead),
            "create": lambda: timing.time_calls(
                create, [next(pending) for _ in range(create_calls)], create_calls, overhead
            ),
            # a yardstick of how busy the machine was: one bare round trip to PostgreSQL
            "pg_round_trip": lambda: timing.time_calls(pg_round_trip, list_users, list_calls, overhead),
        }
        log(f"scale: verify / list / create x {rounds} rounds on {tokens:,} tokens")
        pooled = timing.interleaved(variants, rounds)
        out["results"] = {name: timing.summarize_ns(samples) for name, samples in pooled.items()}
        with svc.db.engine.connect() as conn:
            plan = (
                conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM tokens "
                    f"WHERE user_id = {list_users[0]} ORDER BY id DESC LIMIT 101"
                )
                .scalars()
                .all()
            )
            out["list_query_plan"] = list(plan)
        pg_conn.close()
        svc.close()
    return out

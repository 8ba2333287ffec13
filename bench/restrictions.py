"""Section: what each per-token restriction costs a warm request, and what the limits cost the database.

In process on SQLite, through ``kbai.web.auth.check_token(..., warm_only=True)`` (the check every
token-authenticated request and ``/auth/check`` runs, after the record is cached): a plain token against
one with an IP allowlist of 50 ranges (the client in the last), a rate limit, a quota, and all three.
Variants are interleaved round by round. Each limited token's budget is large enough that no share runs
out while timing (the figure is the in-memory count). Then the database side: 10,000 admissions of a token
limited to 1,000 per minute and of one with a quota of 10,000, counting the shares taken (each one short
write transaction) and the SQL statements they cost.
"""

from __future__ import annotations

from typing import Any

import timing
from common import FAST_ARGON2, log, scratch_sqlite

ALLOWLIST = [f"10.{i}.0.0/16" for i in range(48)] + ["2001:db8::/32", "203.0.113.0/24"]
CLIENT = "203.0.113.7"
BIG = 2_000_000_000


def run(quick: bool) -> dict[str, Any]:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from kbai.config import Settings
    from kbai.services import Services
    from kbai.store.audit import Actor
    from kbai.tokenformat import digest
    from kbai.web.auth import check_token

    calls, rounds = (5_000, 3) if quick else (50_000, 7)
    out: dict[str, Any] = {"calls_per_round": calls, "rounds": rounds}
    with scratch_sqlite("restrictions") as url:
        svc = Services.build(Settings(database_url=url, cache_ttl_seconds=300, **FAST_ARGON2))
        try:
            op = Actor.operator()
            tenant, _admin, _ = svc.access.create_tenant(op, "Bench", "admin@bench.test", "bench-password-1")
            user = svc.access.user_by_email("admin@bench.test")
            assert user is not None
            actor = Actor(
                kind="user", user_id=user.id, tenant_id=user.tenant_id, email=user.email, person_id=user.person_id
            )
            kinds: dict[str, dict[str, Any]] = {
                "plain": {},
                "allowlist_50": {"allowed_ips": ALLOWLIST},
                "rate_limit": {"rate_limit": {"requests": 1_000_000_000, "per": "hour"}},
                "quota": {"quota": {"remaining": BIG}},
                "all_three": {
                    "allowed_ips": ALLOWLIST,
                    "rate_limit": {"requests": 1_000_000_000, "per": "hour"},
                    "quota": {"remaining": BIG},
                },
            }
            tokens = {}
            for name, limits in kinds.items():
                _, plaintext = svc.tokens.create(actor, name, ["users.read"], **limits)
                tokens[name] = plaintext
                assert check_token(svc, CLIENT, plaintext) is not None  # loads the record, takes the shares
            overhead = timing.timer_overhead_ns()

            def variant(token: str):
                return lambda: timing.time_calls(
                    lambda _: check_token(svc, CLIENT, token, (), warm_only=True), [None], calls, overhead, warmup=500
                )

            pooled = timing.interleaved({name: variant(t) for name, t in tokens.items()}, rounds)
            out["per_check"] = {name: timing.summarize_ns(samples) for name, samples in pooled.items()}
            plain = out["per_check"]["plain"]["median_us"]
            out["extra_us"] = {name: v["median_us"] - plain for name, v in out["per_check"].items()}
            log(
                "restrictions per check (median µs): "
                + ", ".join(f"{k} {v['median_us']:.2f}" for k, v in out["per_check"].items())
            )

            # The database side of the limits: shares per 10,000 admissions.
            seen: list[str] = []

            def listener(conn, cursor, statement, params, context, executemany):
                seen.append(statement)

            side: dict[str, Any] = {}
            for name, limits in (
                ("rate_1000_per_minute", {"rate_limit": {"requests": 1000, "per": "minute"}}),
                ("quota_10000", {"quota": {"remaining": 10_000}}),
            ):
                _, plaintext = svc.tokens.create(actor, name, ["users.read"], **limits)
                record = svc.tokens.load_record(digest(plaintext))
                assert record is not None
                before = svc.limits.shares_taken
                seen.clear()
                event.listen(Engine, "before_cursor_execute", listener)
                try:
                    admitted = sum(1 for _ in range(10_000) if (a := svc.limits.admit(record)) and a.error is None)
                finally:
                    event.remove(Engine, "before_cursor_execute", listener)
                side[name] = {
                    "admitted": admitted,
                    "shares_taken": svc.limits.shares_taken - before,
                    "sql_statements": len(seen),
                }
            out["database_per_10000"] = side
        finally:
            svc.close()
    return out

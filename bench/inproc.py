"""Section 1: one verification, in process, per call.

Variants, interleaved round by round so that noise on a shared machine hits them alike:
- floor: SHA-256 hex of a token (what ``kbai.tokenformat.digest`` does), batched;
- warm: ``TokenService.verify`` through the VerificationCache, every sampled token already cached;
- cold SQLite / cold PostgreSQL: the cache disabled (``cache_ttl_seconds=0, negative_cache_seconds=0``),
  so every call runs ``TokenService.load_record`` (one statement: token, owner, tenant, permissions);
- peer: djangorestframework-api-key's ``APIKey.objects.is_valid`` and ``get_from_key`` on SQLite
  with the same number of keys, in its own venv and interpreter, driven round by round over a pipe.
Plus a breakdown of the warm path into its parts (format check, digest, cache hit, clock, checks).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from typing import Any

import seed
import timing
from common import FAST_ARGON2, PEERS_DIR, REDIS_URL, WORK, log, scratch_pg, scratch_sqlite


class PeerProcess:
    """The peer measuring script, kept running so its rounds interleave with kbai's."""

    def __init__(self, python: str, keys: int) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        self.db = WORK / f"peer-inproc-{uuid.uuid4().hex[:8]}.db"
        env = {"PEER_DB": str(self.db), "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}
        self.proc = subprocess.Popen(
            [python, str(PEERS_DIR / "peer_measure.py"), "serve", "--keys", str(keys)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=PEERS_DIR,
        )
        self.info = self._read()

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer process exited ({self.proc.wait()})")
        return json.loads(line)

    def ask(self, command: str) -> list[float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return list(self._read())

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=30)
        for suffix in ("", "-wal", "-shm", "-journal"):
            self.db.with_name(self.db.name + suffix).unlink(missing_ok=True)


def run(quick: bool, peer_python: str | None) -> dict[str, Any]:
    from kbai import tokenformat as fmt
    from kbai.config import Settings
    from kbai.services import Services
    from kbai.tokens import verify as pipeline

    tokens, tenants = (10_000, 100) if quick else (100_000, 1_000)
    rounds = 3 if quick else 5
    warm_calls = 20_000 if quick else 100_000
    cold_calls = 500 if quick else 1_500
    floor_batches = 1_000 if quick else 4_000  # of 100 calls each
    out: dict[str, Any] = {
        "tokens": tokens,
        "tenants": tenants,
        "rounds": rounds,
        "calls_per_round": {"warm": warm_calls, "cold": cold_calls, "peer": cold_calls},
    }
    with scratch_sqlite("inproc") as sqlite_url, scratch_pg("inproc") as pg_url:
        ds_sqlite = seed.load(sqlite_url, tokens, tenants, sample_size=2000)
        ds_pg = seed.load(pg_url, tokens, tenants, sample_size=2000)
        # Warm: the cache as a listening process keeps it (entries up to KBAI_CACHE_MAX_AGE_SECONDS, 300 s).
        warm = Services.build(Settings(database_url=sqlite_url, cache_ttl_seconds=300, **FAST_ARGON2))
        cold_sqlite = Services.build(
            Settings(database_url=sqlite_url, cache_ttl_seconds=0, negative_cache_seconds=0, **FAST_ARGON2)
        )
        cold_pg = Services.build(
            Settings(database_url=pg_url, cache_ttl_seconds=0, negative_cache_seconds=0, **FAST_ARGON2)
        )
        sq_tokens = [s.token for s in ds_sqlite.sample]
        pg_tokens = [s.token for s in ds_pg.sample]
        for t in sq_tokens:
            assert warm.tokens.verify(t).ok
        assert cold_sqlite.tokens.verify(sq_tokens[0]).ok and cold_pg.tokens.verify(pg_tokens[0]).ok
        assert len(warm.cache) == len(sq_tokens)

        peer = None
        if peer_python:
            log(f"starting the peer (djangorestframework-api-key, {tokens:,} keys in SQLite)")
            peer = PeerProcess(peer_python, tokens)
            out["peer_env"] = {k: peer.info[k] for k in ("python", "django", "keys", "timer_overhead_ns")}
        overhead = timing.timer_overhead_ns()
        out["timer_overhead_ns"] = overhead
        # What a *failed* authentication costs the failure limiter (a successful one consults nothing):
        # counting it in memory (no KBAI_REDIS_URL) and in Redis (a key prefix of its own); and a bare
        # PostgreSQL round trip with the same driver, the yardstick of the cold PostgreSQL goal.
        from kbai.ratelimit import FailureLimiter, TokenFailures

        limits = 10**9  # never blocks: every call counts
        failures_mem = TokenFailures(FailureLimiter(None, "bench", limits, 10), limits)
        failures_redis = TokenFailures(
            FailureLimiter(REDIS_URL, f"kbai-bench-{uuid.uuid4().hex[:8]}", limits, 10), limits
        )
        ips = [f"10.0.{i // 250}.{i % 250}" for i in range(1000)]
        import psycopg

        pg_conn = psycopg.connect(pg_url, autocommit=True)

        def pg_round_trip(_: object) -> None:
            pg_conn.execute("SELECT 1").fetchone()

        # The cold statement itself on that bare connection, no kbai code around it: what the server and the
        # driver cost for it (psycopg prepares it after five runs, as on kbai's own connections).
        from kbai.store.queries import TOKEN_RECORD

        record_sql = str(TOKEN_RECORD.compile(cold_pg.db.single_engine))
        pg_digests = [fmt.digest(t) for t in pg_tokens]

        def pg_record_driver(token_digest: str) -> None:
            pg_conn.execute(record_sql, {"digest": token_digest}).fetchall()

        def floor() -> list[float]:
            return timing.time_batched(
                lambda t: hashlib.sha256(t.encode("ascii")).hexdigest(), sq_tokens, floor_batches, 100
            )

        variants = {
            "sha256_floor": floor,
            "warm": lambda: timing.time_calls(warm.tokens.verify, sq_tokens, warm_calls, overhead, warmup=1000),
            "cold_sqlite": lambda: timing.time_calls(
                cold_sqlite.tokens.verify, sq_tokens, cold_calls, overhead, warmup=100
            ),
            "cold_postgresql": lambda: timing.time_calls(
                cold_pg.tokens.verify, pg_tokens, cold_calls, overhead, warmup=100
            ),
        }
        variants["failure_counted_memory"] = lambda: timing.time_calls(
            failures_mem.failed, ips, cold_calls, overhead, warmup=100
        )
        variants["failure_counted_redis"] = lambda: timing.time_calls(
            failures_redis.failed, ips, cold_calls, overhead, warmup=100
        )
        variants["pg_round_trip"] = lambda: timing.time_calls(pg_round_trip, ips, cold_calls, overhead, warmup=100)
        variants["pg_record_driver"] = lambda: timing.time_calls(
            pg_record_driver, pg_digests, cold_calls, overhead, warmup=100
        )
        if peer is not None:
            variants["peer_sha256_floor"] = lambda: peer.ask(f"sha256 {floor_batches}")
            variants["peer_is_valid"] = lambda: peer.ask(f"is_valid {cold_calls}")
            variants["peer_get_from_key"] = lambda: peer.ask(f"get_from_key {cold_calls}")
        log(f"in-process verification: {len(variants)} variants x {rounds} rounds")
        try:
            pooled = timing.interleaved(variants, rounds)
        finally:
            if peer is not None:
                peer.close()
        out["results"] = {name: timing.summarize_ns(samples) for name, samples in pooled.items()}

        # The warm path, part by part (same tokens, same process).
        digests = [fmt.digest(t) for t in sq_tokens]
        now = warm.clock.now()
        records = {d: warm.cache.lookup(d) for d in digests}
        parts = {
            "format_check": lambda: timing.time_batched(fmt.is_well_formed, sq_tokens, floor_batches, 100),
            "digest": lambda: timing.time_batched(fmt.digest, sq_tokens, floor_batches, 100),
            "cache_hit": lambda: timing.time_batched(warm.cache.lookup, digests, floor_batches, 100),
            "clock_now": lambda: timing.time_batched(lambda _: warm.clock.now(), sq_tokens, floor_batches, 100),
            "pipeline_with_dict_lookup": lambda: timing.time_batched(
                lambda t: pipeline.verify(t, records.get, now), sq_tokens, floor_batches, 100
            ),
            "verify_total": lambda: timing.time_batched(warm.tokens.verify, sq_tokens, floor_batches, 100),
        }
        breakdown = timing.interleaved(parts, rounds)
        out["warm_breakdown"] = {name: timing.summarize_ns(samples) for name, samples in breakdown.items()}
        pg_conn.close()
        for svc in (warm, cold_sqlite, cold_pg):
            svc.close()
    r = out["results"]
    ratios = {
        "warm_over_sha256": r["warm"]["median_us"] / r["sha256_floor"]["median_us"],
        "cold_sqlite_over_warm": r["cold_sqlite"]["median_us"] / r["warm"]["median_us"],
        "cold_postgresql_over_warm": r["cold_postgresql"]["median_us"] / r["warm"]["median_us"],
        "cold_postgresql_over_pg_round_trip": r["cold_postgresql"]["median_us"] / r["pg_round_trip"]["median_us"],
        "pg_record_driver_over_pg_round_trip": r["pg_record_driver"]["median_us"] / r["pg_round_trip"]["median_us"],
    }
    if "peer_is_valid" in r:
        ratios["peer_is_valid_over_warm"] = r["peer_is_valid"]["median_us"] / r["warm"]["median_us"]
        ratios["peer_is_valid_over_cold_sqlite"] = r["peer_is_valid"]["median_us"] / r["cold_sqlite"]["median_us"]
        ratios["peer_interpreter_sha256_speed"] = r["sha256_floor"]["median_us"] / r["peer_sha256_floor"]["median_us"]
    out["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
    return out

"""Section 5: how long a revocation takes to reach another instance.

Two real ``kbai serve`` processes (A and B) on one database, in each configuration: PostgreSQL +
Redis (pub/sub; a prefix unique to this run), PostgreSQL alone (LISTEN/NOTIFY) and one SQLite file
(the table both poll every 0.1 s). Defaults otherwise (cache max age 300 s), so B refuses the token
only because the channel told it.
Each try: create a token through A's API (session + CSRF), warm B's cache with it (three
``/auth/check`` calls, 200), then revoke it through A's API (``POST /api/v1/tokens/{id}/revoke``)
and poll B's ``/auth/check`` back to back until it answers 401. Recorded: the time from sending
the revoke to B's first 401, and from A's response to that 401.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import seed
from common import REDIS_URL, log, scratch_pg, scratch_sqlite, start_kbai, wait_healthy


def _tries(url_a: str, url_b: str, email: str, tries: int) -> list[dict[str, float]]:
    import httpx

    out = []
    with httpx.Client(base_url=url_a, timeout=30) as a, httpx.Client(base_url=url_b, timeout=30) as b:
        login = a.post("/api/v1/session", json={"email": email, "password": seed.BENCH_PASSWORD})
        login.raise_for_status()
        csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
        for _ in range(tries):
            created = a.post(
                "/api/v1/tokens", headers=csrf, json={"name": f"propagation {uuid.uuid4().hex[:8]}", "scopes": []}
            )
            created.raise_for_status()
            token_id, token = created.json()["id"], created.json()["token"]
            bearer = {"Authorization": f"Bearer {token}"}
            for _ in range(3):
                status = b.get("/auth/check", headers=bearer).status_code
                if status != 200:
                    raise RuntimeError(f"B refused a fresh token ({status})")
            t0 = time.perf_counter()
            revoked = a.post(f"/api/v1/tokens/{token_id}/revoke", headers=csrf)
            t1 = time.perf_counter()
            revoked.raise_for_status()
            polls = 0
            while True:
                polls += 1
                status = b.get("/auth/check", headers=bearer).status_code
                if status == 401:
                    break
                if status != 200 or time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"B still answers {status} after {time.perf_counter() - t0:.1f} s")
            t2 = time.perf_counter()
            out.append(
                {
                    "from_request_ms": (t2 - t0) * 1000,
                    "after_response_ms": max(0.0, t2 - t1) * 1000,
                    "revoke_request_ms": (t1 - t0) * 1000,
                    "polls": polls,
                }
            )
            del token, bearer
            time.sleep(0.05)
    return out


def _summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    def stat(key: str) -> dict[str, float]:
        values = [r[key] for r in rows]
        return {"median_ms": round(statistics.median(values), 2), "max_ms": round(max(values), 2)}

    return {
        "tries": len(rows),
        "from_revoke_request": stat("from_request_ms"),
        "after_revoke_response": stat("after_response_ms"),
        "revoke_request": stat("revoke_request_ms"),
        "polls_median": statistics.median(r["polls"] for r in rows),
    }


def run(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tries = 10 if quick else 20
    scenarios = [("redis", "pg"), ("postgresql_notify", "pg"), ("sqlite_poll", "sqlite")]
    with scratch_pg("propagation") as pg, scratch_sqlite("propagation") as sqlite:
        emails = {}
        for db_name, db_url in (("pg", pg), ("sqlite", sqlite)):
            ds = seed.load(db_url, 100, 1, sample_size=1)
            emails[db_name] = ds.user(2)[1]  # a developer: holds developer.manage_tokens
        for name, db_name in scenarios:
            url, email, n = (pg if db_name == "pg" else sqlite), emails[db_name], tries
            extra: dict[str, str] = {}
            if name == "redis":
                extra |= {"KBAI_REDIS_URL": REDIS_URL, "KBAI_REDIS_PREFIX": f"kbai-bench-{uuid.uuid4().hex[:8]}"}
            log(f"propagation ({name}): {n} tries between two kbai serve processes")
            # Not pinned: each instance may use any core, as two instances on one host would.
            a = start_kbai(f"prop-{name}-a", url, core=None, wait=False, **extra)
            b = start_kbai(f"prop-{name}-b", url, core=None, wait=False, **extra)
            try:
                wait_healthy(a)
                wait_healthy(b)
                out[name] = _summary(_tries(a.url, b.url, email, n))
            finally:
                b.stop()
                a.stop()
    return out

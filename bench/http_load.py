"""Section 2: requests per second and latency over HTTP on loopback, with wrk.

Every single-process server is pinned to core 0 (``taskset -c 0``) and wrk to core 1 (one thread),
so each server gets exactly one core. Targets, measured round-robin for several rounds (noise hits
all alike), every request with a valid credential:
- the ceilings: a bare Starlette JSON endpoint and a bare FastAPI app (sync and async routes), on
  the same uvicorn options as ``kbai serve`` (bench/bare_app.py);
- kbai ``/auth/check`` and ``GET /api/v1/me`` on SQLite (the embedded default), on PostgreSQL +
  Redis and on PostgreSQL alone; ``/auth/check`` on SQLite again with ``KBAI_ACCESS_LOG_TOKEN_READS``;
- a small Starlette service (bench/sdk_app.py) unprotected and protected by ``kbai.sdk``'s
  middleware with the local verifier;
- the peer: Django REST framework + djangorestframework-api-key (a view behind HasAPIKey) under
  gunicorn (sync workers, 3 = 2 x 1 core + 1 as gunicorn recommends), SQLite with the same keys.
Then ``kbai serve --workers 2`` against one worker, both unpinned (the whole machine, wrk included),
and what the warm load cost the databases: PostgreSQL transactions (``pg_stat_database``) and Redis
commands (``INFO commandstats`` of a redis-server of the bench's own) per 10,000 requests.
The token lives only in a Lua script under bench/work/ (removed afterwards), never on a command line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import seed
from common import (
    BENCH,
    CLIENT_CORE,
    PEERS_DIR,
    PYTHON,
    WORK,
    Server,
    free_port,
    kbai_env,
    log,
    pinned,
    scratch_pg,
    scratch_sqlite,
    start_kbai,
    start_process,
    wait_healthy,
)

CONNECTIONS = 32

_LUA = """wrk.method = "GET"
%(header)s
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKJSON {\\"requests\\":%%d,\\"duration_us\\":%%d,\\"errors\\":{\\"connect\\":%%d," ..
    "\\"read\\":%%d,\\"write\\":%%d,\\"status\\":%%d,\\"timeout\\":%%d},\\"latency_us\\":{\\"p50\\":%%d," ..
    "\\"p90\\":%%d,\\"p99\\":%%d,\\"max\\":%%d,\\"mean\\":%%.1f}}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def _script(auth: str | None) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    header = f'wrk.headers["Authorization"] = "{auth}"' if auth else ""
    path.write_text(_LUA % {"header": header})
    path.chmod(0o600)
    return path


def wrk(
    wrk_bin: str, url: str, script: Path, seconds: float, connections: int = CONNECTIONS, core: str | None = CLIENT_CORE
) -> dict[str, Any]:
    argv = [wrk_bin, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url]
    out = subprocess.run(pinned(core, argv) if core else argv, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk gave no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    data = json.loads(match.group(1))
    data["rps"] = round(data["requests"] / (data["duration_us"] / 1e6), 1)
    return data


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the bench's own, so its command counts are exactly the measured server's."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    import redis

    port = free_port()
    WORK.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(WORK)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.RedisError:
                time.sleep(0.1)
        client.close()
        yield url
    finally:
        proc.kill()
        proc.wait()


class RedisCalls:
    """Calls per command the server answered, read over one connection opened up front (so its own HELLO
    is not among the counts; its INFO calls are left out)."""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_connect_timeout=2)
        self._client.ping()

    def __call__(self) -> dict[str, int]:
        stats = self._client.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}

    def close(self) -> None:
        self._client.close()


def pg_transactions(url: str) -> int:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


def _peer_server(peer_python: str, keys: int) -> tuple[Server, str, Path]:
    db = WORK / f"peer-http-{uuid.uuid4().hex[:8]}.db"
    env = {"PEER_DB": str(db), "PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "peer_settings"}
    out = subprocess.run(
        [peer_python, str(PEERS_DIR / "peer_measure.py"), "setup", "--keys", str(keys)],
        capture_output=True,
        text=True,
        env=env,
        cwd=PEERS_DIR,
        check=True,
    )
    key = json.loads(out.stdout.strip().splitlines()[-1])["key"]
    gunicorn = str(Path(peer_python).parent / "gunicorn")
    port = free_port()
    server = start_process(
        "peer-gunicorn",
        [gunicorn, "--workers", "3", "--bind", f"127.0.0.1:{port}", "peer_wsgi:application"],
        env,
        port,
        "/check",
        cwd=PEERS_DIR,
    )
    return server, key, db


def _bare(name: str, app: str, path: str) -> Server:
    port = free_port()
    return start_process(
        name,
        [PYTHON, str(BENCH / "bare_app.py"), "--app", app, "--port", str(port)],
        {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")},
        port,
        path,
        cwd=BENCH,
        wait=False,
    )


def _sdk(name: str, database_url: str, protected: bool) -> Server:
    port = free_port()
    env = kbai_env(database_url, BENCH_SDK_PROTECTED="1" if protected else "0")
    return start_process(
        name, [PYTHON, str(BENCH / "sdk_app.py"), "--port", str(port)], env, port, "/contacts", cwd=BENCH, wait=False
    )


def _summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": round(statistics.median(r["rps"] for r in rs), 1),
        "p50_ms": round(statistics.median(r["latency_us"]["p50"] for r in rs) / 1000, 3),
        "p99_ms": round(statistics.median(r["latency_us"]["p99"] for r in rs) / 1000, 3),
        "rps_per_round": [r["rps"] for r in rs],
        "errors": sum(sum(r["errors"].values()) for r in rs),
        "requests": sum(r["requests"] for r in rs),
    }


def _interleaved(
    wrk_bin: str,
    targets: dict[str, tuple[str, Path]],
    rounds: int,
    seconds: float,
    warmup: float,
    core: str | None = CLIENT_CORE,
    label: str = "HTTP",
) -> dict[str, list[dict[str, Any]]]:
    for name, (url, script) in targets.items():
        check = wrk(wrk_bin, url, script, 1, connections=1, core=core)
        if check["errors"]["status"] or not check["requests"]:
            raise RuntimeError(f"{name}: the warm-up got error responses ({check['errors']})")
        if warmup:
            wrk(wrk_bin, url, script, warmup, core=core)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for r in range(rounds):
        for name, (url, script) in targets.items():
            runs[name].append(wrk(wrk_bin, url, script, seconds, core=core))
        log(f"{label} round {r + 1}/{rounds} done")
    return runs


def run(quick: bool, wrk_bin: str | None, peer_python: str | None) -> dict[str, Any]:
    if wrk_bin is None:
        return {"skipped": "wrk is not available"}
    seconds = 2 if quick else 3
    warmup = 0 if quick else 2  # besides the 1 s single-connection check every target gets first
    rounds = 1 if quick else 8  # many short rounds: a burst of noise spoils one round, not the median
    io_seconds = 3 if quick else 10
    keys = 1_000
    servers: list[Server] = []
    scripts: list[Path] = []
    peer_db: Path | None = None
    out: dict[str, Any] = {
        "connections": CONNECTIONS,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "wrk_threads": 1,
        "server_core": 0,
        "client_core": 1,
        "tokens_in_db": keys,
    }
    try:
        with (
            scratch_sqlite("http") as sqlite_url,
            scratch_pg("http") as pg_url,
            scratch_pg("http_alone") as pg_alone_url,
            private_redis() as redis_url,
        ):
            token_sq = seed.load(sqlite_url, keys, 10, sample_size=5).sample[0].token
            token_pg = seed.load(pg_url, keys, 10, sample_size=5).sample[0].token
            token_pg_alone = seed.load(pg_alone_url, keys, 10, sample_size=5).sample[0].token
            log("starting servers (kbai x4, bare apps x2, sdk apps x2, peer)")
            kbai_sq = start_kbai("kbai-sqlite", sqlite_url, wait=False)
            kbai_sq_log = start_kbai("kbai-sqlite-log", sqlite_url, wait=False, KBAI_ACCESS_LOG_TOKEN_READS="true")
            kbai_pg = start_kbai(
                "kbai-pg-redis",
                pg_url,
                wait=False,
                KBAI_REDIS_URL=redis_url,
                KBAI_REDIS_PREFIX=f"kbai-bench-{uuid.uuid4().hex[:8]}",
            )
            kbai_pg_alone = start_kbai("kbai-pg-alone", pg_alone_url, wait=False)
            bare_st = _bare("bare-starlette", "starlette", "/bare-starlette")
            bare_fa = _bare("bare-fastapi", "fastapi", "/bare")
            sdk_open = _sdk("sdk-unprotected", sqlite_url, protected=False)
            sdk_prot = _sdk("sdk-protected", sqlite_url, protected=True)
            servers += [kbai_sq, kbai_sq_log, kbai_pg, kbai_pg_alone, bare_st, bare_fa, sdk_open, sdk_prot]
            for s in servers:
                wait_healthy(s)
            sq_auth, pg_auth = _script(f"Bearer {token_sq}"), _script(f"Bearer {token_pg}")
            pg_alone_auth, none = _script(f"Bearer {token_pg_alone}"), _script(None)
            scripts += [sq_auth, pg_auth, pg_alone_auth, none]
            targets: dict[str, tuple[str, Path]] = {
                "bare_starlette": (bare_st.url + "/bare-starlette", none),
                "bare_sync": (bare_fa.url + "/bare", none),
                "bare_async": (bare_fa.url + "/bare-async", none),
                "kbai_sqlite_auth_check": (kbai_sq.url + "/auth/check", sq_auth),
                "kbai_sqlite_me": (kbai_sq.url + "/api/v1/me", sq_auth),
                "kbai_pg_redis_auth_check": (kbai_pg.url + "/auth/check", pg_auth),
                "kbai_pg_redis_me": (kbai_pg.url + "/api/v1/me", pg_auth),
                "kbai_pg_alone_auth_check": (kbai_pg_alone.url + "/auth/check", pg_alone_auth),
                "kbai_pg_alone_me": (kbai_pg_alone.url + "/api/v1/me", pg_alone_auth),
                "kbai_sqlite_auth_check_access_log": (kbai_sq_log.url + "/auth/check", sq_auth),
                "sdk_unprotected": (sdk_open.url + "/contacts", sq_auth),
                "sdk_protected": (sdk_prot.url + "/contacts", sq_auth),
            }
            if peer_python:
                peer, key, peer_db = _peer_server(peer_python, keys)
                servers.append(peer)
                peer_auth = _script(f"Api-Key {key}")
                scripts.append(peer_auth)
                targets["peer_drf_api_key"] = (peer.url + "/check", peer_auth)
            runs = _interleaved(wrk_bin, targets, rounds, seconds, warmup)

            # What the warm load costs the databases, measured from outside the servers.
            log("database work under warm load: PostgreSQL transactions and Redis commands")
            io: dict[str, Any] = {"seconds": io_seconds}
            redis_calls = RedisCalls(redis_url)
            for name, url, script, db in (
                ("kbai_pg_redis_auth_check", kbai_pg.url + "/auth/check", pg_auth, pg_url),
                ("kbai_pg_redis_me", kbai_pg.url + "/api/v1/me", pg_auth, pg_url),
                ("kbai_pg_alone_auth_check", kbai_pg_alone.url + "/auth/check", pg_alone_auth, pg_alone_url),
                ("kbai_pg_alone_me", kbai_pg_alone.url + "/api/v1/me", pg_alone_auth, pg_alone_url),
            ):
                time.sleep(11)  # PostgreSQL backends report their counts within 10 s of going idle
                tx0, r0 = pg_transactions(db), redis_calls()
                done = wrk(wrk_bin, url, script, io_seconds)
                time.sleep(11)
                tx1, r1 = pg_transactions(db), redis_calls()
                commands = {k: v - r0.get(k, 0) for k, v in r1.items() if v > r0.get(k, 0)}
                io[name] = {
                    "requests": done["requests"],
                    "pg_transactions": tx1 - tx0,
                    "pg_transactions_per_10k": round((tx1 - tx0) * 10_000 / done["requests"], 2),
                    "redis_commands": commands if "redis" in name else None,
                    "redis_commands_per_10k": round(sum(commands.values()) * 10_000 / done["requests"], 2)
                    if "redis" in name
                    else None,
                    "window_seconds": io_seconds + 11,
                }
            redis_calls.close()
            out["database_work"] = io
            for s in servers:
                s.stop()
            servers.clear()

            # Several workers: the whole machine (server and wrk unpinned), one worker against two.
            log("kbai serve --workers 2 against one worker (unpinned)")
            one = start_kbai("kbai-sqlite-1w", sqlite_url, core=None, wait=False)
            port = free_port()
            two = start_process(
                "kbai-sqlite-2w",
                [str(Path(PYTHON).parent / "kbai"), "serve", "--port", str(port), "--workers", "2"],
                kbai_env(sqlite_url),
                port,
                "/healthz",
                core=None,
                wait=False,
            )
            servers += [one, two]
            for s in servers:
                wait_healthy(s)
            time.sleep(2)  # both workers of `two` up
            worker_runs = _interleaved(
                wrk_bin,
                {
                    "workers_1_auth_check": (one.url + "/auth/check", sq_auth),
                    "workers_2_auth_check": (two.url + "/auth/check", sq_auth),
                },
                rounds,
                seconds,
                warmup,
                core=None,
                label="workers",
            )
            runs.update(worker_runs)
    finally:
        for s in servers:
            s.stop()
        for p in scripts:
            p.unlink(missing_ok=True)
        if peer_db is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(peer_db) + suffix).unlink(missing_ok=True)
    results = {name: _summary(rs) for name, rs in runs.items()}
    out["results"] = results
    r = {k: v["rps"] for k, v in results.items()}
    ratios = {
        "kbai_sqlite_auth_check_over_bare_starlette": r["kbai_sqlite_auth_check"] / r["bare_starlette"],
        "kbai_pg_redis_auth_check_over_bare_starlette": r["kbai_pg_redis_auth_check"] / r["bare_starlette"],
        "kbai_pg_alone_auth_check_over_bare_starlette": r["kbai_pg_alone_auth_check"] / r["bare_starlette"],
        "kbai_sqlite_me_over_bare_async": r["kbai_sqlite_me"] / r["bare_async"],
        "kbai_pg_redis_me_over_bare_async": r["kbai_pg_redis_me"] / r["bare_async"],
        "kbai_pg_alone_me_over_bare_async": r["kbai_pg_alone_me"] / r["bare_async"],
        "sdk_protected_over_unprotected": r["sdk_protected"] / r["sdk_unprotected"],
        "access_log_over_default": r["kbai_sqlite_auth_check_access_log"] / r["kbai_sqlite_auth_check"],
        "workers_2_over_1": r["workers_2_auth_check"] / r["workers_1_auth_check"],
        "bare_async_over_bare_starlette": r["bare_async"] / r["bare_starlette"],
    }
    if "peer_drf_api_key" in r:
        for name in ("kbai_sqlite_auth_check", "kbai_pg_redis_auth_check", "kbai_sqlite_me"):
            ratios[f"{name}_over_peer"] = r[name] / r["peer_drf_api_key"]
    out["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    return out

"""Section 2: requests per second and latency over HTTP on loopback, with wrk.

Every server is pinned to core 0 (``taskset -c 0``) and wrk to core 1 (one thread), so each server
gets exactly one core. Targets, measured round-robin for several rounds (noise hits all alike):
- kbai (SQLite, no Redis: the embedded default) ``/auth/check`` and ``GET /api/v1/me`` with a valid token;
- kbai (PostgreSQL + Redis: the scale-out setup) the same two;
- the bench-only bare app (bench/bare_app.py: same FastAPI/uvicorn stack and options), sync and async;
- the peer: Django REST framework + djangorestframework-api-key (a view behind HasAPIKey) under
  gunicorn (sync workers, 3 = 2 x 1 core + 1 as gunicorn recommends), SQLite with the same keys.
The token lives only in a Lua script under bench/work/ (removed afterwards), never on a command line.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import uuid
from pathlib import Path
from typing import Any

import seed
from common import (BENCH, CLIENT_CORE, PEERS_DIR, PYTHON, REDIS_URL, WORK, Server, free_port, log, pinned,
                    scratch_pg, scratch_sqlite, start_kbai, start_process, wait_healthy)

CONNECTIONS = 16

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


def wrk(wrk_bin: str, url: str, script: Path, seconds: float, connections: int = CONNECTIONS) -> dict[str, Any]:
    argv = pinned(CLIENT_CORE, [wrk_bin, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
                                "-s", str(script), url])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk gave no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    data = json.loads(match.group(1))
    data["rps"] = round(data["requests"] / (data["duration_us"] / 1e6), 1)
    return data


def _peer_server(peer_python: str, keys: int) -> tuple[Server, str, Path]:
    db = WORK / f"peer-http-{uuid.uuid4().hex[:8]}.db"
    env = {"PEER_DB": str(db), "PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "peer_settings"}
    out = subprocess.run([peer_python, str(PEERS_DIR / "peer_measure.py"), "setup", "--keys", str(keys)],
                         capture_output=True, text=True, env=env, cwd=PEERS_DIR, check=True)
    key = json.loads(out.stdout.strip().splitlines()[-1])["key"]
    gunicorn = str(Path(peer_python).parent / "gunicorn")
    port = free_port()
    server = start_process("peer-gunicorn", [gunicorn, "--workers", "3", "--bind", f"127.0.0.1:{port}",
                                             "peer_wsgi:application"], env, port, "/check", cwd=PEERS_DIR)
    return server, key, db


def run(quick: bool, wrk_bin: str | None, peer_python: str | None) -> dict[str, Any]:
    if wrk_bin is None:
        return {"skipped": "wrk is not available"}
    seconds = 2 if quick else 3
    warmup = 0 if quick else 2  # besides the 1 s single-connection check every target gets first
    rounds = 1 if quick else 10  # many short rounds: a burst of noise spoils one round, not the median
    keys = 1_000
    servers: list[Server] = []
    scripts: list[Path] = []
    peer_db: Path | None = None
    out: dict[str, Any] = {"connections": CONNECTIONS, "seconds_per_run": seconds, "rounds": rounds,
                           "wrk_threads": 1, "server_core": 0, "client_core": 1, "tokens_in_db": keys}
    try:
        with scratch_sqlite("http") as sqlite_url, scratch_pg("http") as pg_url:
            token_sq = seed.load(sqlite_url, keys, 10, sample_size=5).sample[0].token
            token_pg = seed.load(pg_url, keys, 10, sample_size=5).sample[0].token
            log("starting servers (kbai x2, bare app, peer)")
            kbai_sq = start_kbai("kbai-sqlite", sqlite_url, wait=False)
            servers.append(kbai_sq)
            kbai_pg = start_kbai("kbai-pg-redis", pg_url, wait=False, KBAI_REDIS_URL=REDIS_URL,
                                 KBAI_REDIS_PREFIX=f"kbai-bench-{uuid.uuid4().hex[:8]}")
            servers.append(kbai_pg)
            port = free_port()
            bare = start_process("bare", [PYTHON, str(BENCH / "bare_app.py"), "--port", str(port)],
                                 {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")}, port, "/bare",
                                 cwd=BENCH, wait=False)
            servers.append(bare)
            for s in servers:
                wait_healthy(s)
            sq_auth, pg_auth = _script(f"Bearer {token_sq}"), _script(f"Bearer {token_pg}")
            none = _script(None)
            scripts += [sq_auth, pg_auth, none]
            targets: dict[str, tuple[str, Path]] = {
                "kbai_sqlite_auth_check": (kbai_sq.url + "/auth/check", sq_auth),
                "kbai_sqlite_me": (kbai_sq.url + "/api/v1/me", sq_auth),
                "kbai_pg_redis_auth_check": (kbai_pg.url + "/auth/check", pg_auth),
                "kbai_pg_redis_me": (kbai_pg.url + "/api/v1/me", pg_auth),
                "bare_sync": (bare.url + "/bare", none),
                "bare_async": (bare.url + "/bare-async", none),
            }
            if peer_python:
                peer, key, peer_db = _peer_server(peer_python, keys)
                servers.append(peer)
                peer_auth = _script(f"Api-Key {key}")
                scripts.append(peer_auth)
                targets["peer_drf_api_key"] = (peer.url + "/check", peer_auth)
            for name, (url, script) in targets.items():
                check = wrk(wrk_bin, url, script, 1, connections=1)
                if check["errors"]["status"] or not check["requests"]:
                    raise RuntimeError(f"{name}: the warm-up got error responses ({check['errors']})")
                if warmup:
                    wrk(wrk_bin, url, script, warmup)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for r in range(rounds):
                for name, (url, script) in targets.items():
                    runs[name].append(wrk(wrk_bin, url, script, seconds))
                log(f"HTTP round {r + 1}/{rounds} done")
    finally:
        for s in servers:
            s.stop()
        for p in scripts:
            p.unlink(missing_ok=True)
        if peer_db is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(peer_db) + suffix).unlink(missing_ok=True)
    results = {}
    for name, rs in runs.items():
        results[name] = {
            "rps": round(statistics.median(r["rps"] for r in rs), 1),
            "p50_ms": round(statistics.median(r["latency_us"]["p50"] for r in rs) / 1000, 3),
            "p99_ms": round(statistics.median(r["latency_us"]["p99"] for r in rs) / 1000, 3),
            "rps_per_round": [r["rps"] for r in rs],
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "requests": sum(r["requests"] for r in rs),
        }
    out["results"] = results
    base = results["bare_sync"]["rps"]
    ratios = {f"{name}_over_bare_sync": round(v["rps"] / base, 3) for name, v in results.items() if name != "bare_sync"}
    if "peer_drf_api_key" in results:
        peer_rps = results["peer_drf_api_key"]["rps"]
        for name in ("kbai_sqlite_auth_check", "kbai_pg_redis_auth_check", "kbai_sqlite_me"):
            ratios[f"{name}_over_peer"] = round(results[name]["rps"] / peer_rps, 2)
    out["ratios"] = ratios
    return out

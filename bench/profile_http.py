"""Where a served request spends its time: py-spy samples a real ``kbai serve`` under wrk load.

A sampling profiler that sees every thread is needed because some work runs in anyio's thread
pool (pyinstrument follows one thread). py-spy is installed with pip into
bench/work/tools (bench-only, never into the project's venv). The samples are sorted into buckets
by the frames they contain (first match wins, in the order of ``BUCKETS``); idle samples (workers
waiting for work) are left out.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import seed
from common import BENCH, PYTHON, WORK, free_port, log, scratch_sqlite, start_kbai, start_process, wait_healthy
from http_load import _script, wrk

TOOLS = WORK / "tools"


def _in_worker_kbai(stack: str) -> bool:
    """kbai code running in a thread-pool worker (the route or a sync dependency such as ``principal``)."""
    _, sep, worker = stack.partition("WorkerThread.run")
    return bool(sep) and "(kbai/" in worker


# First match wins; a sample lands in exactly one bucket.
BUCKETS: list[tuple[str, Callable[[str], bool]]] = [
    ("token verification (format, digest, cache lookup, checks)", lambda s: "TokenService.verify" in s),
    ("failure limiter (failures only)", lambda s: "TokenFailures." in s or "FailureLimiter." in s),
    ("last-used record (UsageBuffer.record)", lambda s: "UsageBuffer.record" in s),
    ("access log line (access_log)", lambda s: "access_log (kbai/" in s),
    ("request metrics (Metrics.served)", lambda s: "Metrics.served" in s),
    ("response model validation + serialization (FastAPI serialize_response)", lambda s: "serialize_response" in s),
    ("other kbai route/dependency code in the worker thread", _in_worker_kbai),
    (
        "thread-pool hop (anyio: hand-off to a worker thread and back)",
        lambda s: "run_sync_in_worker_thread" in s or "WorkerThread.run" in s,
    ),
    ("FastAPI request handling + dependency resolution (rest)", lambda s: "get_request_handler" in s),
    ("Starlette routing + inner middleware (rest)", lambda s: "ExceptionMiddleware.__call__" in s),
    ("KbaiMiddleware own work (request id uuid4, header copies, body limit)", lambda s: "KbaiMiddleware.__call__" in s),
    # ForwardAuth wraps the whole app, so it is on the stack of every request: it comes after the buckets
    # of what runs inside it, or the rest of every other route's time would be charged to it.
    (
        "/auth/check front's own work (ForwardAuth: header scan, identity headers, response)",
        lambda s: "ForwardAuth.__call__" in s,
    ),
    ("uvicorn HTTP protocol (httptools parsing, response writing)", lambda s: "uvicorn/" in s),
]
_IDLE_LEAVES = ("Condition.wait", "Queue.get", "Event.wait", "select (selectors")


def ensure_py_spy() -> str | None:
    binary = TOOLS / "bin" / "py-spy"
    if binary.exists():
        return str(binary)
    log("installing py-spy into bench/work/tools (bench only)")
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--upgrade",
            "--target",
            str(TOOLS),
            "py-spy",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not binary.exists():
        log(f"py-spy is not available; the profile is skipped: {result.stderr[-500:]}")
        return None
    return str(binary)


def _classify(raw: Path, requests: float, rate_hz: int) -> dict[str, Any]:
    buckets: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        leaf = frames[-1]
        if any(leaf.startswith(x) for x in _IDLE_LEAVES) and ("WorkerThread.run" in stack or "Thread" in frames[0]):
            idle += n
            continue
        total += n
        for name, matches in BUCKETS:
            if matches(stack):
                buckets[name] += n
                break
        else:
            buckets["event loop (uvloop, native: I/O and waiting) and other"] += n
        seen = set()
        for f in frames:
            key = re.sub(r":\d+\)$", ")", f)
            if key not in seen and ("kbai/" in key or "fastapi/" in key or "starlette/" in key or "anyio/" in key):
                seen.add(key)
                functions[key] += n
    per_request = 1e6 / rate_hz / requests if requests else 0.0
    return {
        "samples": total,
        "idle_samples_excluded": idle,
        "gil_us_per_request": round(total * per_request, 1),
        "buckets_pct": {k: round(100 * v / total, 1) for k, v in buckets.most_common()} if total else {},
        # GIL-holding time per request in each bucket: samples / rate / requests served while sampling.
        "buckets_us_per_request": {k: round(v * per_request, 1) for k, v in buckets.most_common()},
        "top_functions_inclusive_pct": {k: round(100 * v / total, 1) for k, v in functions.most_common(25)}
        if total
        else {},
    }


def run(quick: bool, wrk_bin: str | None) -> dict[str, Any]:
    if wrk_bin is None:
        return {"skipped": "wrk is not available"}
    spy = ensure_py_spy()
    if spy is None:
        return {"skipped": "py-spy is not available"}
    seconds, rate = (4 if quick else 12), 250
    out: dict[str, Any] = {
        "profile_seconds": seconds,
        "rate_hz": rate,
        "server": "kbai serve (SQLite, no Redis) and bench/bare_app.py, each alone on core 0",
    }
    with scratch_sqlite("profile") as url:
        token = seed.load(url, 1_000, 10, sample_size=1).sample[0].token
        server = start_kbai("kbai-profile", url, wait=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")}
        port = free_port()
        bare = start_process(
            "bare-profile",
            [PYTHON, str(BENCH / "bare_app.py"), "--port", str(port)],
            env,
            port,
            "/bare",
            cwd=BENCH,
            wait=False,
        )
        port = free_port()
        bare_st = start_process(
            "bare-starlette-profile",
            [PYTHON, str(BENCH / "bare_app.py"), "--app", "starlette", "--port", str(port)],
            env,
            port,
            "/bare-starlette",
            cwd=BENCH,
            wait=False,
        )
        script = _script(f"Bearer {token}")
        try:
            wait_healthy(server)
            wait_healthy(bare)
            wait_healthy(bare_st)
            for target, path in (
                (bare_st, "/bare-starlette"),
                (bare, "/bare-async"),
                (server, "/auth/check"),
                (server, "/api/v1/me"),
            ):
                wrk(wrk_bin, target.url + path, script, 1)
                raw = WORK / f"profile-{path.strip('/').replace('/', '_')}.txt"
                proc = subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(target.process.pid),
                        "--duration",
                        str(seconds),
                        "--rate",
                        str(rate),
                        "--format",
                        "raw",
                        "--gil",
                        "--output",
                        str(raw),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                load = wrk(wrk_bin, target.url + path, script, seconds + 1)
                _, err = proc.communicate(timeout=seconds + 60)
                if proc.returncode != 0 or not raw.exists():
                    out[path] = {"skipped": f"py-spy failed: {err[-300:]}"}
                    continue
                out[path] = {"rps_while_profiled": load["rps"], **_classify(raw, load["rps"] * seconds, rate)}
                log(f"profiled {path}")
        finally:
            script.unlink(missing_ok=True)
            server.stop()
            bare.stop()
            bare_st.stop()
    return out


if __name__ == "__main__":
    sys.exit("run through bench/run.py")

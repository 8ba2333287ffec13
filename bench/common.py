"""Plumbing for the benchmark suite: paths, machine facts, scratch databases, server processes, progress."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
PEERS_DIR = BENCH / "peers"
PEERS_VENV = BENCH / ".venv-peers"
PYTHON = sys.executable
KBAI_BIN = str(Path(sys.executable).parent / "kbai")

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Cheap argon2 for the bench's own logins and user setup; nothing measured here hashes a password.
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 64, "argon2_parallelism": 1}
FAST_ARGON2_ENV = {"KBAI_ARGON2_TIME_COST": "1", "KBAI_ARGON2_MEMORY_KIB": "64", "KBAI_ARGON2_PARALLELISM": "1"}

SERVER_CORE = "0"
CLIENT_CORE = "1"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Progress:
    """One self-rewriting line on stderr: ``label  12,000/1,000,000  1.2%  3.4 s``."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = time.monotonic()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= (0.2 if self._tty else 5.0) or self.done >= self.total:
            self._last = now
            pct = 100.0 * self.done / self.total if self.total else 100.0
            line = f"  {self.label}  {self.done:,}/{self.total:,}  {pct:5.1f}%  {now - self.started:6.1f} s"
            print(("\r" + line) if self._tty else line, end="" if self._tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._tty:
            print(file=sys.stderr, flush=True)


# ---- machine ---------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_facts() -> dict[str, object]:
    facts: dict[str, object] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "kernel": platform.release(),
        "loadavg_at_start": loadavg(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with suppress(ValueError, OSError):
        facts["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    import inspect

    import kbai
    from kbai.gateway import routes
    from kbai.web import api, auth

    # The shape of the measured code that the report's explanations depend on.
    try:
        from kbai.gateway import check  # noqa: F401

        raw_asgi = True
    except ImportError:
        raw_asgi = False
    facts["code_shape"] = {
        "auth_check_async": inspect.iscoroutinefunction(routes.auth_check),
        "auth_check_raw_asgi": raw_asgi,
        "principal_async": inspect.iscoroutinefunction(auth.principal),
        "me_async": inspect.iscoroutinefunction(api.me),
    }
    facts["kbai_source"] = str(Path(kbai.__file__).resolve().parent.parent.relative_to(ROOT))
    snapshot = os.environ.get("BENCH_SNAPSHOT")
    if snapshot:
        facts["git_commit"] = snapshot[:12]
        facts["code"] = "its committed src/, measured via --commit"
    else:
        try:
            facts["git_commit"] = subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            facts["code"] = "working tree" + (" (src/ has uncommitted changes)" if dirty else " (clean)")
        except (OSError, subprocess.CalledProcessError):
            facts["git_commit"] = "unknown"
            facts["code"] = "working tree"
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            facts["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            facts["pg_shared_buffers"] = conn.execute("SHOW shared_buffers").fetchone()[0]  # type: ignore[index]
    except Exception as exc:  # noqa: BLE001 - a fact we could not read
        facts["postgresql"] = f"unavailable ({type(exc).__name__})"
    try:
        import redis

        facts["redis"] = redis.Redis.from_url(REDIS_URL, socket_timeout=3).info("server")["redis_version"]
    except Exception as exc:  # noqa: BLE001 - a fact we could not read
        facts["redis"] = f"unavailable ({type(exc).__name__})"
    import sqlite3

    facts["sqlite"] = sqlite3.sqlite_version
    return facts


# ---- scratch PostgreSQL databases -----------------------------------------------------------
def pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


@contextmanager
def scratch_pg(tag: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards whatever happens."""
    from kbai.store import Database

    name = f"kbai_bench_{tag}_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        db = Database(pg_url(name))
        db.upgrade()
        db.dispose()
        yield pg_url(name)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_sqlite(tag: str) -> Iterator[str]:
    """A new, migrated SQLite file under bench/work/, removed afterwards."""
    from kbai.store import Database

    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{tag}-{uuid.uuid4().hex[:8]}.db"
    try:
        db = Database(f"sqlite:///{path}")
        db.upgrade()
        db.dispose()
        yield f"sqlite:///{path}"
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


# ---- server processes -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: str, argv: list[str]) -> list[str]:
    """``argv`` under ``taskset -c core`` where taskset exists (it does on Linux)."""
    return ["taskset", "-c", core, *argv] if shutil.which("taskset") else argv


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    health_path: str = "/"

    def stop(self) -> None:
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_process(
    name: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    health_path: str,
    cwd: Path | None = None,
    core: str | None = SERVER_CORE,
    timeout: float = 60,
    wait: bool = True,
) -> Server:
    """Start a server in its own process group (stopping it stops its workers); wait for health unless told."""
    WORK.mkdir(parents=True, exist_ok=True)
    log_path = WORK / f"{name}-{port}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            pinned(core, argv) if core else argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    server = Server(name, f"http://127.0.0.1:{port}", proc, log_path, health_path)
    if wait:
        wait_healthy(server, timeout)
    return server


def wait_healthy(server: Server, timeout: float = 60) -> Server:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}: {server.log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(server.url + server.health_path, timeout=1).status_code < 500:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not become healthy: {server.log.read_text()[-2000:]}")


def kbai_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")}
    env.update({"KBAI_DATABASE_URL": database_url, **FAST_ARGON2_ENV})
    env.update(extra)
    return env


def start_kbai(name: str, database_url: str, core: str | None = SERVER_CORE, wait: bool = True, **extra: str) -> Server:
    """A real ``kbai serve`` (the product's own uvicorn settings), default log level unless told."""
    port = free_port()
    return start_process(
        name,
        [KBAI_BIN, "serve", "--port", str(port)],
        kbai_env(database_url, **extra),
        port,
        "/healthz",
        core=core,
        wait=wait,
    )


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")

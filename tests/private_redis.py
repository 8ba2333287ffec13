"""A private `redis-server` on a free port, for tests that count Redis commands exactly (the shared
Redis also serves every other test of the run) or kill Redis on purpose."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.conftest import free_port, missing_service


@contextmanager
def private_redis(folder: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(url, process) of a fresh redis-server that nothing else uses; killed afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing_service("the redis-server program")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.RedisError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the private redis-server did not start")
        yield url, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


class CommandCounter:
    """Calls per command the server has answered (``INFO commandstats``), read over one connection
    opened up front, so that neither its HELLO nor its INFO calls are among the counts."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_connect_timeout=2)
        self._client.ping()

    def calls(self) -> Counter[str]:
        calls: Counter[str] = Counter()
        for name, value in self._client.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command != "info":
                calls[command] = int(value["calls"])
        return calls

    def close(self) -> None:
        self._client.close()

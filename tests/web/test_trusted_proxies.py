"""KBAI_TRUSTED_PROXIES: X-Forwarded-For is believed only from the proxies listed. From anyone else a
client cannot pick its own address with the header, so it cannot slip out of the failure rate limits
(or write a made-up address into the audit log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import start_server
from tests.gateway.helpers import seed

LIMIT = 3
BAD = "kbai_pk_" + "0" * 64


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("trusted", ["127.0.0.1", "192.0.2.1"])
@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP"])
def test_forwarded_addresses_count_only_from_trusted_proxies(
    database_url: str, tmp_path: Path, trusted: str, header: str
) -> None:
    seed(database_url)
    server = start_server(
        database_url, tmp_path, KBAI_AUTH_FAILURES_PER_MINUTE=str(LIMIT), KBAI_TRUSTED_PROXIES=trusted
    )
    try:
        with server.client() as c:
            statuses = [
                c.get("/api/v1/me", headers={"Authorization": f"Bearer {BAD}", header: f"203.0.113.{i}"}).status_code
                for i in range(1, LIMIT + 2)
            ]
    finally:
        server.stop()
    if trusted == "127.0.0.1":  # the test talks from 127.0.0.1: each request is a different client
        assert statuses == [401] * (LIMIT + 1)
    else:  # 127.0.0.1 is not a trusted proxy: all are one client, whatever the header says
        assert statuses == [401] * LIMIT + [429]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_x_forwarded_for_wins_over_x_real_ip(database_url: str, tmp_path: Path) -> None:
    """A proxy sending both: X-Forwarded-For names the client (a fixed X-Real-IP must not merge them)."""
    seed(database_url)
    server = start_server(
        database_url, tmp_path, KBAI_AUTH_FAILURES_PER_MINUTE=str(LIMIT), KBAI_TRUSTED_PROXIES="127.0.0.1"
    )
    try:
        with server.client() as c:
            statuses = [
                c.get(
                    "/api/v1/me",
                    headers={
                        "Authorization": f"Bearer {BAD}",
                        "X-Forwarded-For": f"203.0.113.{i}",
                        "X-Real-IP": "198.51.100.7",
                    },
                ).status_code
                for i in range(1, LIMIT + 2)
            ]
            # A bad X-Real-IP (not an address) is ignored: those requests are the peer's own.
            junk = [
                c.get(
                    "/api/v1/me", headers={"Authorization": f"Bearer {BAD}", "X-Real-IP": "=HYPERLINK(1)"}
                ).status_code
                for _ in range(LIMIT + 1)
            ]
    finally:
        server.stop()
    assert statuses == [401] * (LIMIT + 1)
    assert junk == [401] * LIMIT + [429]

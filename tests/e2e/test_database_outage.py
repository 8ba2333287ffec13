"""The database going away: `kbai serve` refuses to start without it (one clear line, no traceback, no
password); a running server survives its connections being killed (as in a PostgreSQL restart) without a
failed request, answers 503 (JSON for the API, a page for the pages) while the database refuses
connections, and carries on with nothing lost once it is back.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import KBAI_BIN, _pg_admin, _pg_url, free_port, server_env, start_server
from tests.gateway.helpers import bearer, create_token, listed, login, seed


@pytest.mark.parametrize(
    "url", ["postgresql://kbai:hunter2-secret@127.0.0.1:1/kbai", "sqlite:////nonexistent-dir-for-kbai/kbai.db"]
)
def test_serve_without_its_database_stops_with_one_clear_line(url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [KBAI_BIN, "serve", "--port", str(free_port())],
        env=server_env(url),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, output[-500:]
    assert "KBAI_DATABASE_URL" in done.stderr
    assert "Traceback" not in output and "hunter2-secret" not in output


def _kill_connections(name: str) -> None:
    _pg_admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )


def test_a_running_server_rides_out_a_database_outage(own_pg_database: str, tmp_path: Path) -> None:
    name = own_pg_database
    url = _pg_url(name)
    seed(url)
    server = start_server(url, tmp_path)
    try:
        with server.client() as c:
            csrf = login(c)
            before = create_token(c, csrf, "before the outage", ["users.read"])

            _kill_connections(name)  # every pooled connection dies, as in a database restart
            assert c.get("/api/v1/tokens").status_code == 200
            during_restart = create_token(c, csrf, "after the restart", ["users.read"])

            _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            _kill_connections(name)
            r = c.get("/api/v1/tokens")
            assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable", r.text
            assert int(r.headers["retry-after"]) >= 1
            r = c.post(
                "/api/v1/tokens", json={"name": "during the outage", "scopes": []}, headers={"X-CSRF-Token": csrf}
            )
            assert r.status_code == 503, r.text
            r = c.get("/system-settings/api-keys")
            assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
            assert "cannot be reached" in r.text
            assert c.get("/healthz").status_code == 503

            _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            tokens = {t["name"] for t in listed(c).values()}
            assert tokens == {"before the outage", "after the restart"}  # nothing lost, nothing half-made
            for token in (before, during_restart):
                assert c.get("/api/v1/me", headers=bearer(token.plaintext)).status_code == 200
            assert c.get("/healthz").status_code == 200
    finally:
        server.stop()
    log = server.log.read_text(errors="replace")
    assert "unhandled" not in log and "Exception in ASGI application" not in log

"""Over a real `kbai serve` (both backends): a signed GitHub report revokes a token that /auth/check
accepted a moment before, and the very next /auth/check refuses it; the owner sees the notification;
public revocation is limited per client IP (as reported by the trusted proxy). Nothing leaks to the log."""

from __future__ import annotations

from pathlib import Path

import httpx

from kbai import tokenformat as fmt
from tests.conftest import start_server
from tests.gateway.helpers import bearer, login, seed
from tests.leaks.conftest import Signer, report_body

URL = "https://github.com/octo/public-repo/blob/abc123/.env"


def create(c: httpx.Client, csrf: str, name: str) -> str:
    r = c.post(
        "/api/v1/tokens",
        json={"name": name, "scopes": ["users.read"], "expires_in_days": 90},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 201
    return str(r.json()["token"])


def test_leak_report_and_public_revocation_over_a_real_server(
    database_url: str, tmp_path: Path, signer: Signer
) -> None:
    seed(database_url)
    server = start_server(
        database_url,
        tmp_path,
        KBAI_SECRET_SCANNING_KEYS_FILE=str(signer.keys_file),
        KBAI_PUBLIC_REVOCATIONS_PER_MINUTE="3",
        KBAI_LOG_LEVEL="DEBUG",
    )
    minted: list[str] = []
    try:
        with server.client() as dev, server.client() as github, server.client() as anyone:
            csrf = login(dev)
            leaked, found, kept = (create(dev, csrf, n) for n in ("Zapier production", "found one", "kept"))
            minted += [leaked, found, kept]
            assert dev.get("/auth/check", headers=bearer(leaked)).status_code == 200

            body = report_body((leaked, URL), (fmt.mint(), URL))
            r = github.post("/api/v1/secret-scanning/github", content=body, headers=signer.headers(body))
            assert r.status_code == 200, r.text
            assert [v["label"] for v in r.json()] == ["true_positive", "false_positive"]
            r = dev.get("/auth/check", headers=bearer(leaked))
            assert r.status_code == 401 and "revoked" in r.headers["www-authenticate"]

            # Unsigned: refused, and the other tokens keep working.
            r = github.post("/api/v1/secret-scanning/github", content=report_body((kept, URL)))
            assert r.status_code == 401
            assert dev.get("/auth/check", headers=bearer(kept)).status_code == 200

            notes = dev.get("/api/v1/notifications").json()
            assert notes["unread"] == 1 and URL in notes["notifications"][0]["body"]

            # Public revocation: 3 a minute per client IP; another IP behind the proxy is not blocked.
            ip = {"X-Forwarded-For": "198.51.100.7"}
            for _ in range(3):
                assert (
                    anyone.post(
                        "/api/v1/credentials/revoke", json={"credentials": [fmt.mint()]}, headers=ip
                    ).status_code
                    == 202
                )
            r = anyone.post("/api/v1/credentials/revoke", json={"credentials": [found]}, headers=ip)
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert dev.get("/auth/check", headers=bearer(found)).status_code == 200
            r = anyone.post(
                "/api/v1/credentials/revoke", json={"credentials": [found]}, headers={"X-Forwarded-For": "198.51.100.8"}
            )
            assert r.status_code == 202 and r.json() == {"received": 1}
            assert dev.get("/auth/check", headers=bearer(found)).status_code == 401
            assert dev.get("/auth/check", headers=bearer(kept)).status_code == 200
    finally:
        server.stop()
    log = server.log.read_text(errors="replace")
    for token in minted:
        leaked_in_log = token[len(fmt.PREFIX) :] in log
        assert not leaked_in_log, f"token {fmt.digest(token)[:12]} in the server log"

"""The example contacts service, run as a real process in remote mode, against a real `kbai serve` (both backends).

It verifies tokens by RFC 7662 introspection with a service credential made by the real
`kbai service-credential create`. Introspection says only "active" or not, so every bad token gets
the one inactive message; and when kbai cannot be asked, requests are refused (503), never let through.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbai import errors
from kbai.config import Settings
from kbai.sdk.verifiers import TOKEN_INACTIVE
from kbai.services import Services
from tests.conftest import FAST_ARGON2, KBAI_BIN, LiveServer, free_port, start_server
from tests.sdk.helpers import (
    PERMISSIONS,
    ContactsService,
    assert_no_token_in,
    assert_refused,
    bearer,
    build_scenario,
    check_contract,
    contacts_env,
    start_contacts,
)

INACTIVE = TOKEN_INACTIVE.template
REMOTE_MESSAGES = {
    "malformed": errors.for_outcome("malformed").message,
    "unknown": INACTIVE,
    "revoked": INACTIVE,
    "expired": INACTIVE,
    "owner_inactive": INACTIVE,
}


@pytest.fixture
def services(database_url: str) -> Iterator[Services]:
    svc = Services.build(Settings(database_url=database_url, permissions_file=PERMISSIONS, **FAST_ARGON2))
    yield svc
    svc.close()


@pytest.fixture
def kbai_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    # No cache lag across processes here (that is kbai's cache, tested in tests/cache): the point is the answers.
    server = start_server(database_url, tmp_path, KBAI_PERMISSIONS_FILE=str(PERMISSIONS), KBAI_CACHE_TTL_SECONDS="0")
    yield server
    server.stop()


def service_credential(server: LiveServer, name: str) -> tuple[str, str]:
    """A client id and secret from the real CLI, with the server's own environment."""
    done = subprocess.run(
        [KBAI_BIN, "service-credential", "create", name], env=server.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    client_id = fields["client_id"].strip()
    secret = fields["client_secret"].split()[0]
    return client_id, secret


def start_remote(
    server: LiveServer,
    tmp_path: Path,
    client_id: str,
    secret: str,
    *,
    as_script: bool = False,
) -> ContactsService:
    env = contacts_env(
        KBAI_INTROSPECT_URL=server.url + "/api/v1/introspect", KBAI_CLIENT_ID=client_id, KBAI_CLIENT_SECRET=secret
    )
    return start_contacts(env, tmp_path, as_script=as_script)


def test_remote_mode_accepts_and_refuses_like_kbai(services: Services, kbai_server: LiveServer, tmp_path: Path) -> None:
    sc = build_scenario(services)
    client_id, secret = service_credential(kbai_server, "contacts-api")

    def revoke_through_kbai() -> None:
        # As an integration would: the token revokes itself through kbai's API.
        with kbai_server.client() as kbai:
            r = kbai.post(f"/api/v1/tokens/{sc.revoked_id}/revoke", headers=bearer(sc.revoked))
        assert r.status_code == 200, r.text

    contacts = start_remote(kbai_server, tmp_path, client_id, secret, as_script=True)
    try:
        with contacts.client() as client:
            check_contract(client, sc, revoke=revoke_through_kbai, messages=REMOTE_MESSAGES)

            # kbai goes away: requests are refused with 503, never let through.
            kbai_server.stop()
            r = client.get("/contacts", headers=bearer(sc.reader))
            assert_refused(r, 503, "auth_unavailable")
    finally:
        contacts.stop()
    output = contacts.output()
    assert_no_token_in(output, sc.all_tokens, "the contacts service's output")
    assert_no_token_in(kbai_server.log.read_text(errors="replace"), sc.all_tokens, "kbai's log")
    assert secret not in output


@pytest.mark.parametrize("backend", ["sqlite"])
def test_remote_mode_with_a_wrong_secret_refuses_everyone(
    services: Services, kbai_server: LiveServer, tmp_path: Path
) -> None:
    sc = build_scenario(services)
    client_id, _secret = service_credential(kbai_server, "contacts-api")
    contacts = start_remote(kbai_server, tmp_path, client_id, "not-the-secret")
    try:
        with contacts.client() as client:
            r = client.get("/contacts", headers=bearer(sc.writer))
            assert_refused(r, 503, "auth_unavailable")
            r = client.get("/contacts")
            assert_refused(r, 401, "not_authenticated")
    finally:
        contacts.stop()
    assert "rejected the service credential" in contacts.output()


def test_kbai_not_reachable_at_start_still_fails_closed(tmp_path: Path) -> None:
    env = contacts_env(
        KBAI_INTROSPECT_URL=f"http://127.0.0.1:{free_port()}/api/v1/introspect",
        KBAI_CLIENT_ID="kbai_sc_0000000000000000",
        KBAI_CLIENT_SECRET="whatever",
    )
    contacts = start_contacts(env, tmp_path)
    try:
        with contacts.client() as client:
            r = client.get("/contacts", headers=bearer("kbai_pk_" + "ab" * 32))
            assert_refused(r, 503, "auth_unavailable")
            r = client.get("/contacts", headers=bearer("kbai_pk_short"))  # malformed: refused without asking
            assert_refused(r, 401, "invalid_token")
    finally:
        contacts.stop()

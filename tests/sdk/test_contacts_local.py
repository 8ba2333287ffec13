"""The example contacts service, run as a real process in local mode, against kbai's database (both backends).

It verifies tokens in-process with kbai's own pipeline: same answers and messages as kbai, and a
successful use shows up as "Last used" once the service shuts down (buffered, then flushed).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbai import errors
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2
from tests.sdk.helpers import (
    PERMISSIONS,
    assert_no_token_in,
    build_scenario,
    check_contract,
    contacts_env,
    start_contacts,
)

LOCAL_MESSAGES = {
    o: errors.for_outcome(o).message for o in ("malformed", "unknown", "revoked", "expired", "owner_inactive")
}


@pytest.fixture
def services(database_url: str) -> Iterator[Services]:
    svc = Services.build(Settings(database_url=database_url, permissions_file=PERMISSIONS, **FAST_ARGON2))
    yield svc
    svc.close()


def test_local_mode_accepts_and_refuses_like_kbai(services: Services, database_url: str, tmp_path: Path) -> None:
    sc = build_scenario(services)
    dev = sc.actor("dev@acme.test")
    # Without Redis, a change made by another process reaches this one within KBAI_CACHE_TTL_SECONDS
    # (kbai's cache, tested in tests/cache). Here the point is the answers, so no cache lag.
    env = contacts_env(
        KBAI_DATABASE_URL=database_url, KBAI_PERMISSIONS_FILE=str(PERMISSIONS), KBAI_CACHE_TTL_SECONDS="0"
    )
    contacts = start_contacts(env, tmp_path)
    try:
        with contacts.client() as client:
            check_contract(
                client, sc, revoke=lambda: services.tokens.revoke(dev, sc.revoked_id), messages=LOCAL_MESSAGES
            )
    finally:
        code = contacts.stop()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit status -15).
    assert code in (0, -signal.SIGTERM), contacts.output()[-2000:]
    assert "Application shutdown complete" in contacts.output()
    assert_no_token_in(contacts.output(), sc.all_tokens, "the contacts service's output")

    # Last used: written on shutdown for tokens that had a successful request, and only for those.
    used = {t.name: t.last_used_at for t in services.tokens.list(sc.world.dev.user_id)}  # type: ignore[arg-type]
    assert used["Contacts sync (read)"] is not None
    assert used["Contacts import"] is not None
    assert used["Old cron job"] is not None  # used once before it was revoked
    assert used["Last week's test"] is None  # only ever refused

"""Issue 13, finding 9: re-reporting a token that is already revoked (GitHub's partner endpoint, the
public revocation API, ``kbai scan --revoke``) notifies, mails and audits nothing: only the report that
moves a token from active to revoked is news. Both backends, a real SMTP server (aiosmtpd).

Tokens are secrets even here: assertions compare counts and ids, never a token.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kbai import tokenformat as fmt
from kbai.app import create_app
from kbai.config import Settings
from kbai.lifecycle.leaks import Sighting
from kbai.services import Services
from kbai.store.models import AuditEvent, Notification
from tests.conftest import FAST_ARGON2, OPERATOR, World
from tests.leaks.conftest import Signer, report_body
from tests.lifecycle.conftest import Mailbox, mailbox  # noqa: F401 - the fixture

GITHUB = "/api/v1/secret-scanning/github"
PUBLIC = "/api/v1/credentials/revoke"
URL = "https://github.com/octo/public-repo/blob/abc123/.env"


@pytest.fixture
def settings(database_url: str, signer: Signer, mailbox: Mailbox) -> Settings:
    return Settings(
        database_url=database_url,
        secret_scanning_keys_file=signer.keys_file,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_from="kbai@acme.test",
        public_revocations_per_minute=1000,
        **FAST_ARGON2,
    )


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False)) as c:
        yield c


def _counts(svc: Services, mailbox: Mailbox) -> tuple[int, int, int]:
    with svc.db.read() as s:
        notes = s.scalar(select(func.count()).select_from(Notification))
        events = s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "token.leak_report"))
    return int(notes or 0), int(events or 0), len(mailbox.messages)


def test_finding9_github_re_report_of_a_revoked_token_notifies_and_audits_once(
    world: World, client: TestClient, signer: Signer, mailbox: Mailbox
) -> None:
    svc = world.services
    _view, token = svc.tokens.create(world.dev, "Zapier production", ["users.read"])
    body = report_body((token, URL))
    first = client.post(GITHUB, content=body, headers=signer.headers(body))
    assert first.status_code == 200 and first.json()[0]["label"] == "true_positive"
    once = _counts(svc, mailbox)
    assert once == (2, 1, 2)  # owner + admin notified and mailed, one audit event
    for _ in range(3):
        again = client.post(GITHUB, content=body, headers=signer.headers(body))
        assert again.status_code == 200 and again.json()[0]["label"] == "true_positive"  # still ours
    assert _counts(svc, mailbox) == once


def test_finding9_public_re_report_of_a_revoked_token_notifies_and_audits_once(
    world: World, client: TestClient, mailbox: Mailbox
) -> None:
    svc = world.services
    _view, token = svc.tokens.create(world.dev, "n8n nightly", ["users.read"])
    assert client.post(PUBLIC, json={"credentials": [token]}).status_code == 202
    once = _counts(svc, mailbox)
    assert once == (2, 1, 2)
    for _ in range(5):
        r = client.post(PUBLIC, json={"credentials": [token, token]})
        assert r.status_code == 202 and r.json() == {"received": 2}
    assert _counts(svc, mailbox) == once


def test_finding9_a_token_revoked_by_its_owner_and_then_reported_is_not_news(
    world: World, client: TestClient, signer: Signer, mailbox: Mailbox
) -> None:
    svc = world.services
    view, token = svc.tokens.create(world.dev, "old script", ["users.read"])
    svc.tokens.revoke(world.dev, view.id)
    expired, old = svc.tokens.create(world.dev, "short lived", ["users.read"], expires_in_days=1)
    svc.clock.advance(days=2)  # type: ignore[attr-defined]
    body = report_body((token, URL), (old, URL))
    r = client.post(GITHUB, content=body, headers=signer.headers(body))
    assert [v["label"] for v in r.json()] == ["true_positive", "true_positive"]
    assert client.post(PUBLIC, json={"credentials": [token, old]}).status_code == 202
    svc.leaks.respond(OPERATOR, "kbai scan", {fmt.digest(token): [Sighting(url="a.env:1", source="file")]})
    assert _counts(svc, mailbox) == (0, 0, 0)
    assert svc.tokens.get(world.dev, expired.id).status == "expired"  # left as it was


def test_finding9_a_batch_with_old_and_new_leaks_announces_only_the_new(
    world: World, client: TestClient, mailbox: Mailbox
) -> None:
    svc = world.services
    _a, first = svc.tokens.create(world.dev, "first", ["users.read"])
    assert client.post(PUBLIC, json={"credentials": [first]}).status_code == 202
    before = _counts(svc, mailbox)
    second_view, second = svc.tokens.create(world.dev, "second", ["users.read"])
    assert client.post(PUBLIC, json={"credentials": [first, second]}).status_code == 202
    after = _counts(svc, mailbox)
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (2, 1, 2)
    with svc.db.read() as s:
        targets = list(
            s.scalars(
                select(AuditEvent.target_id).where(AuditEvent.action == "token.leak_report").order_by(AuditEvent.id)
            )
        )
    assert targets[-1] == str(second_view.id) and len(targets) == 2

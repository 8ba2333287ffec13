"""GitHub secret scanning partner endpoint: signed reports revoke our tokens at once, notify, audit;
anything unsigned or wrongly signed changes nothing. Both backends.

Tokens are secrets even here: assertions compare digests or bare booleans, never a token.
"""

from __future__ import annotations

import hashlib
import json

from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import event, insert, select

from kbai import tokenformat as fmt
from kbai.clock import FrozenClock
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.store.models import AuditEvent, Notification, Token
from tests.conftest import OPERATOR, World
from tests.leaks.conftest import Signer, report_body

URL = "https://github.com/octo/public-repo/blob/abc123/.env"
PATH = "/api/v1/secret-scanning/github"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def mint(world: World, name: str, actor: Actor | None = None) -> str:
    _view, plaintext = world.services.tokens.create(actor or world.dev, name, ["users.read"])
    return plaintext


def status(svc: Services, token: str) -> str:
    return svc.tokens.verify(token).outcome.value


def notifications(svc: Services, email: str) -> list[Notification]:
    user = svc.access.user_by_email(email)
    assert user is not None
    with svc.db.read() as s:
        return list(s.scalars(select(Notification).where(Notification.user_id == user.id).order_by(Notification.id)))


def leak_events(svc: Services) -> list[AuditEvent]:
    with svc.db.read() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == "token.leak_report")))


def test_signed_report_revokes_ours_at_once_and_labels_each(world: World, client: TestClient, signer: Signer) -> None:
    svc = world.services
    a, b = mint(world, "Zapier production"), mint(world, "n8n nightly sync")
    keep = mint(world, "Local dev")
    foreign = fmt.mint()
    assert status(svc, a) == "valid" and status(svc, b) == "valid"  # warms the verification cache
    body = report_body((a, URL), (foreign, URL), (b, URL + "#L2"), ("kbai_pk_short", URL))
    r = client.post(PATH, content=body, headers=signer.headers(body))
    assert r.status_code == 200, r.text
    verdicts = r.json()
    assert [v["label"] for v in verdicts] == ["true_positive", "false_positive", "true_positive", "false_positive"]
    assert [v["token_hash"] for v in verdicts] == [sha(a), sha(foreign), sha(b), sha("kbai_pk_short")]
    assert {v["token_type"] for v in verdicts} == {"kbai_api_token"}
    # Revoked for the very next verification (the cache was invalidated through TokenService).
    assert status(svc, a) == "revoked" and status(svc, b) == "revoked"
    assert status(svc, keep) == "valid"
    with svc.db.read() as s:
        revoked_by = {t.revoked_by for t in s.scalars(select(Token).where(Token.revoked_at.is_not(None)))}
    assert revoked_by == {"leak report: GitHub secret scanning"}
    leaked = a in r.text or b in r.text
    assert not leaked


def test_owner_and_admins_are_notified_with_the_url_and_it_is_audited(
    world: World, client: TestClient, signer: Signer
) -> None:
    svc = world.services
    token = mint(world, "Zapier production")
    body = report_body((token, URL))
    assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200
    [mine] = notifications(svc, "dev@acme.test")
    [admins] = notifications(svc, "admin@acme.test")
    assert mine.kind == "token.leaked" and "revoked" in mine.title and fmt.display_prefix(token) in mine.title
    assert URL in mine.body and "GitHub secret scanning" in mine.body
    assert "dev@acme.test" in admins.title and URL in admins.body
    assert mine.details["locations"] == [{"url": URL, "source": "content"}] and mine.details["revoked"] is True
    [event] = leak_events(svc)
    assert event.actor == "service:GitHub secret scanning" and event.tenant_id == world.tenant_id
    assert event.details["url"] == URL and event.details["source"] == "content" and event.details["revoked"] is True
    everything = repr([(n.title, n.body, n.details) for n in (mine, admins)]) + repr(event.details)
    leaked = token[len(fmt.PREFIX) :] in everything
    assert not leaked
    # The session API shows it to the owner.
    r = client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
    assert r.status_code == 200
    listed = client.get("/api/v1/notifications").json()
    assert listed["unread"] == 1 and listed["notifications"][0]["body"] == mine.body


def test_already_revoked_or_inactive_owner_still_true_positive(
    world: World, client: TestClient, signer: Signer
) -> None:
    svc = world.services
    old = mint(world, "old")
    view = svc.tokens.list(world.dev.user_id)[0]  # type: ignore[arg-type]
    svc.tokens.revoke(world.dev, view.id)
    active = mint(world, "still active")
    svc.access.deactivate_user(OPERATOR, world.dev.user_id)  # type: ignore[arg-type]
    body = report_body((old, URL), (active, URL))
    r = client.post(PATH, content=body, headers=signer.headers(body))
    assert [v["label"] for v in r.json()] == ["true_positive", "true_positive"]
    with svc.db.read() as s:
        rows = {t.digest: t for t in s.scalars(select(Token))}
    assert rows[fmt.digest(old)].revoked_by == "user:dev@acme.test"  # untouched
    assert rows[fmt.digest(active)].revoked_by == "leak report: GitHub secret scanning"
    # The deactivated owner gets nothing; the admin hears of the one this report revoked, not of the one
    # that was revoked already (issue 13, finding 9: only a change of state is news).
    assert notifications(svc, "dev@acme.test") == []
    titles = [n.title for n in notifications(svc, "admin@acme.test")]
    assert len(titles) == 1 and titles[0].endswith("was found in public and revoked")
    assert [e.target_id for e in leak_events(svc)] == [str(rows[fmt.digest(active)].id)]


def test_a_grace_period_token_is_revoked_now(world: World, client: TestClient, signer: Signer) -> None:
    svc = world.services
    old = mint(world, "rotating")
    old_id = svc.tokens.list(world.dev.user_id)[0].id  # type: ignore[arg-type]
    svc.tokens.rotate(world.dev, old_id, 3600)
    assert status(svc, old) == "valid"
    body = report_body((old, URL))
    assert client.post(PATH, content=body, headers=signer.headers(body)).json()[0]["label"] == "true_positive"
    assert status(svc, old) == "revoked"


def test_bad_signatures_are_401_and_revoke_nothing(world: World, client: TestClient, signer: Signer) -> None:
    svc = world.services
    token = mint(world, "Zapier production")
    body = report_body((token, URL))
    good = signer.headers(body)
    stranger = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "tampered body": (body.replace(b"octo", b"octa"), good),
        "unknown key id": (body, {**good, "Github-Public-Key-Identifier": "not-a-key"}),
        "signed by another key": (body, {**good, "Github-Public-Key-Signature": signer.sign(body, stranger)}),
        "signature of another body": (body, {**good, "Github-Public-Key-Signature": signer.sign(body + b" ")}),
        "not base64": (body, {**good, "Github-Public-Key-Signature": "%%%"}),
        "base64 but not DER": (body, {**good, "Github-Public-Key-Signature": "aGVsbG8="}),
        "no signature": (body, {k: v for k, v in good.items() if k != "Github-Public-Key-Signature"}),
        "no key id": (body, {k: v for k, v in good.items() if k != "Github-Public-Key-Identifier"}),
        "no headers": (body, {"Content-Type": "application/json"}),
    }
    for case, (content, headers) in cases.items():
        r = client.post(PATH, content=content, headers=headers)
        assert r.status_code == 401, case
        assert r.json()["error"]["code"] == "invalid_signature", case
    assert status(svc, token) == "valid"
    assert leak_events(svc) == [] and notifications(svc, "dev@acme.test") == []


def test_any_listed_key_verifies_and_the_file_is_reread(world: World, client: TestClient, signer: Signer) -> None:
    svc = world.services
    rotated = ec.generate_private_key(ec.SECP256R1())
    first = mint(world, "first")
    body = report_body((first, URL))
    # A key GitHub has just rotated in is unknown until the operator refreshes the file...
    headers = {**signer.headers(body, key_id="new-key"), "Github-Public-Key-Signature": signer.sign(body, rotated)}
    assert client.post(PATH, content=body, headers=headers).status_code == 401
    signer.publish((signer.key_id, signer.key, False), ("new-key", rotated, True))
    # ...and accepted right after, without a restart; the previous key, no longer current, still verifies.
    assert client.post(PATH, content=body, headers=headers).json()[0]["label"] == "true_positive"
    second = mint(world, "second")
    body2 = report_body((second, URL))
    assert client.post(PATH, content=body2, headers=signer.headers(body2)).json()[0]["label"] == "true_positive"
    assert status(svc, first) == "revoked" and status(svc, second) == "revoked"


def test_unusable_keys_file_refuses_every_report(world: World, client: TestClient, signer: Signer) -> None:
    token = mint(world, "Zapier production")
    body = report_body((token, URL))
    for content in (
        "not json",
        '{"keys": []}',
        '{"public_keys": [{"key_identifier": "'
        + signer.key_id
        + '", "key": "-----BEGIN PUBLIC KEY-----\\nnope\\n-----END PUBLIC KEY-----"}]}',
    ):
        signer.keys_file.write_text(content)
        r = client.post(PATH, content=body, headers=signer.headers(body))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_signature"
    signer.keys_file.unlink()
    assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 401
    assert status(world.services, token) == "valid"


def test_not_configured_refuses_every_report(world: World, signer: Signer) -> None:
    from kbai.app import create_app
    from kbai.config import Settings
    from tests.conftest import FAST_ARGON2

    svc = Services.build(
        Settings(database_url=world.services.settings.database_url, **FAST_ARGON2), clock=FrozenClock()
    )
    try:
        token = mint(world, "Zapier production")
        body = report_body((token, URL))
        with TestClient(create_app(svc, start_background=False)) as c:
            r = c.post(PATH, content=body, headers=signer.headers(body))
        assert r.status_code == 401
        assert status(svc, token) == "valid"
    finally:
        svc.close()


def test_a_signed_but_malformed_body_is_a_clear_422(world: World, client: TestClient, signer: Signer) -> None:
    for body in (
        b"not json",
        b"{}",
        b'{"token": "x"}',
        b'[{"url": "x"}]',
        b"[1]",
        b'[{"token": 5}]',
        b'[{"token": "x", "url": 5}]',
        b"\xff\xfe",
        b"[" * 100_000,
        b"",
    ):
        r = client.post(PATH, content=body, headers=signer.headers(body))
        assert r.status_code == 422, body[:20]
        assert r.json()["error"]["code"] == "validation_error"
        assert "JSON array" in r.json()["error"]["message"]
    r = client.post(PATH, content=b"[]", headers=signer.headers(b"[]"))
    assert r.status_code == 200 and r.json() == []


def test_odd_strings_are_false_positives_not_errors(world: World, client: TestClient, signer: Signer) -> None:
    odd = ["", "kbai_pk_" + "A" * 64, "\ud800", "kbai_pk_" + "0" * 64, "x" * 5000, fmt.mint() + "0"]
    body = json.dumps([{"token": t} for t in odd] + [{"token": "y", "type": None, "extra": [1]}]).encode()
    r = client.post(PATH, content=body, headers=signer.headers(body))
    assert r.status_code == 200, r.text
    assert {v["label"] for v in r.json()} == {"false_positive"}
    assert r.json()[0]["token_type"] == "kbai_api_token"


def test_a_batch_of_1000_uses_a_constant_number_of_token_queries(
    world: World, client: TestClient, signer: Signer
) -> None:
    svc = world.services
    now = svc.clock.now()
    plaintexts = [fmt.mint() for _ in range(1000)]
    with svc.db.write() as s:
        s.execute(
            insert(Token),
            [
                {
                    "tenant_id": world.tenant_id,
                    "user_id": world.dev.user_id,
                    "name": f"bulk {i}",
                    "prefix": fmt.display_prefix(t),
                    "digest": fmt.digest(t),
                    "scopes": ["users.read"],
                    "created_at": now,
                }
                for i, t in enumerate(plaintexts)
            ],
        )
    foreign = [fmt.mint() for _ in range(20)]
    body = report_body(*[(t, f"{URL}#L{i}") for i, t in enumerate(plaintexts + foreign)])
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(svc.db.engine, "before_cursor_execute", count)
    try:
        r = client.post(PATH, content=body, headers=signer.headers(body))
    finally:
        event.remove(svc.db.engine, "before_cursor_execute", count)
    assert r.status_code == 200
    labels = [v["label"] for v in r.json()]
    assert labels == ["true_positive"] * 1000 + ["false_positive"] * 20
    # Speed is measured in bench/, never timed here: what keeps a big report fast is that the number of token
    # statements does not grow with it.
    token_statements = [s for s in statements if "tokens" in s.split("WHERE")[0] and "INSERT" not in s]
    assert len(token_statements) <= 2, len(token_statements)  # one SELECT ... FOR UPDATE, one UPDATE
    with svc.db.read() as s:
        assert s.scalar(select(Token.id).where(Token.revoked_at.is_(None)).limit(1)) is None
    assert len(leak_events(svc)) == 1000
    assert status(svc, plaintexts[500]) == "revoked"


def test_the_openapi_document_describes_the_endpoints(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    github = doc["paths"][PATH]["post"]
    assert github["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    item = github["requestBody"]["content"]["application/json"]["schema"]["items"]
    assert {"token", "type", "url", "source"} <= set(item["properties"])
    assert {p["name"] for p in github["parameters"]} == {"github-public-key-identifier", "github-public-key-signature"}
    assert "401" in github["responses"] and "200" in github["responses"]
    verdict = doc["components"]["schemas"]["GitHubVerdictOut"]
    assert set(verdict["properties"]) == {"token_hash", "token_type", "label"}
    revoke = doc["paths"]["/api/v1/credentials/revoke"]["post"]
    assert "credentials" in revoke["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"202", "422", "429"} <= set(revoke["responses"])
    assert "/api/v1/notifications" in doc["paths"]

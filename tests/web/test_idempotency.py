"""``Idempotency-Key`` on every creating POST, and rotation that never mints a second successor.

A retry with the same key and body answers the first status and body with ``"token": null`` and
creates nothing; another body is a 422; keys are per caller and per operation; they live 24 h (frozen
clock); concurrent requests with one key create one thing; the stored answers hold no secret. Rotating
a rotated token is 409 ``already_rotated`` naming the successor, also under concurrency. In-process on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.errors import KbaiError
from kbai.lifecycle.worker import Worker
from kbai.services import Services
from kbai.store import idempotency
from kbai.store.idempotency import IdempotencyStore
from kbai.store.models import IdempotencyRecord, Role, Token, User
from kbai.web.idempotency import HEADER, REPLAYED_HEADER
from tests.conftest import World
from tests.tokens.helpers import assert_no_secret
from tests.web.conftest import login
from tests.web.safety import error_problems, shown

TOKENS = "/api/v1/tokens"
BODY = {"name": "Zapier production", "scopes": ["users.read"], "expires_in_days": 90}
FULL_TOKEN = re.compile(r"kbai_pk_[0-9a-f]{64}")


class Caller:
    """A logged-in client that sends its CSRF token (and an Idempotency-Key when given)."""

    def __init__(self, client: TestClient, email: str, password: str) -> None:
        self.client = client
        self.email, self.password = email, password
        self.csrf = login(client, email, password)

    def relogin(self) -> None:
        """A new session (the old one expired): keys belong to the person, not to one session."""
        self.csrf = login(self.client, self.email, self.password)

    def post(self, path: str, body: Any = None, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}
        if key is not None:
            headers[HEADER] = key
        if body is not None:
            kwargs["json"] = body
        return self.client.post(path, headers=headers, **kwargs)


@pytest.fixture
def app(services: Services) -> Any:
    return create_app(services, start_background=False)


@pytest.fixture
def dev(world: World, app: Any) -> Iterator[Caller]:
    with TestClient(app) as client:
        yield Caller(client, "dev@acme.test", "dev-password-1")


@pytest.fixture
def admin(world: World, app: Any) -> Iterator[Caller]:
    with TestClient(app) as client:
        yield Caller(client, "admin@acme.test", "admin-password-1")


def count(svc: Services, model: Any, *where: Any) -> int:
    with svc.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def tokens_named(svc: Services, name: str) -> int:
    return count(svc, Token, Token.name == name)


def without_token(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "token"}


# ---- create ----------------------------------------------------------------------------------------
def test_same_key_and_body_answers_the_same_without_the_token(world: World, dev: Caller) -> None:
    first = dev.post(TOKENS, BODY, key="create-1")
    assert first.status_code == 201, shown(first)
    plaintext = first.json()["token"]
    assert FULL_TOKEN.fullmatch(plaintext)
    assert REPLAYED_HEADER not in first.headers
    # The same request, its JSON written differently (key order, spacing): still the same body.
    again = dev.post(
        TOKENS,
        key="create-1",
        content=json.dumps(dict(reversed(BODY.items())), indent=2),
        headers={"Content-Type": "application/json"},
    )
    assert again.status_code == 201, shown(again)
    assert again.headers[REPLAYED_HEADER] == "true"
    assert again.json()["token"] is None
    assert again.json() == {**first.json(), "token": None}
    # Byte for byte the first answer, the token aside (times, field order and all).
    assert again.text == first.text.replace(f'"{plaintext}"', "null")
    assert_no_secret(plaintext, again.text, "replayed answer")
    assert tokens_named(world.services, BODY["name"]) == 1
    # The one token works; the replay only told the client what was created.
    assert world.services.tokens.verify(plaintext).ok


def test_without_a_key_a_retry_is_a_conflict_as_before(world: World, dev: Caller) -> None:
    assert dev.post(TOKENS, BODY).status_code == 201
    r = dev.post(TOKENS, BODY)
    assert not error_problems(r, 409, "name_taken"), shown(r)
    assert tokens_named(world.services, BODY["name"]) == 1


def test_same_key_with_another_body_is_422_and_creates_nothing(world: World, dev: Caller) -> None:
    assert dev.post(TOKENS, BODY, key="create-2").status_code == 201
    r = dev.post(TOKENS, {**BODY, "name": "n8n nightly"}, key="create-2")
    assert not error_problems(r, 422, "idempotency_key_reused", "different request"), shown(r)
    assert tokens_named(world.services, "n8n nightly") == 0
    # The key still answers its own request.
    assert dev.post(TOKENS, BODY, key="create-2").headers[REPLAYED_HEADER] == "true"


def test_keys_are_per_caller(world: World, dev: Caller, admin: Caller) -> None:
    """The same key from another person is another key: they never see each other's answers."""
    mine = dev.post(TOKENS, BODY, key="shared-key")
    theirs = admin.post(TOKENS, BODY, key="shared-key")
    assert mine.status_code == theirs.status_code == 201
    assert theirs.json()["token"] is not None and REPLAYED_HEADER not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert tokens_named(world.services, BODY["name"]) == 2
    # And with another body: no 422, since the key is theirs alone.
    other = admin.post(TOKENS, {**BODY, "name": "admin's own"}, key="shared-key-2")
    assert dev.post(TOKENS, {**BODY, "name": "dev's own"}, key="shared-key-2").status_code == 201
    assert other.status_code == 201


def test_keys_are_per_operation(world: World, admin: Caller) -> None:
    made = admin.post(TOKENS, BODY, key="op-key")
    role = admin.post("/api/v1/roles", {"name": "Ops", "permissions": ["users.read"]}, key="op-key")
    assert made.status_code == role.status_code == 201
    assert role.json()["name"] == "Ops" and REPLAYED_HEADER not in role.headers
    # Rotating two different tokens with one key: the second is another request (another path), so a 422.
    other = admin.post(TOKENS, {**BODY, "name": "second"}).json()
    assert admin.post(f"{TOKENS}/{made.json()['id']}/rotate", {}, key="rotate-key").status_code == 201
    r = admin.post(f"{TOKENS}/{other['id']}/rotate", {}, key="rotate-key")
    assert not error_problems(r, 422, "idempotency_key_reused"), shown(r)
    assert count(world.services, Token, Token.rotated_from_id == other["id"]) == 0


def test_a_key_is_kept_24_hours(world: World, dev: Caller, clock: FrozenClock) -> None:
    first = dev.post(TOKENS, BODY, key="day-key").json()
    clock.advance(hours=24, seconds=-1)
    dev.relogin()
    assert dev.post(TOKENS, BODY, key="day-key").headers.get(REPLAYED_HEADER) == "true"
    dev.post(f"{TOKENS}/{first['id']}/revoke")
    clock.advance(seconds=1)
    # 24 h on, the key is new again: the same request creates a new token (the first was revoked meanwhile).
    again = dev.post(TOKENS, BODY, key="day-key")
    assert again.status_code == 201 and REPLAYED_HEADER not in again.headers, shown(again)
    assert again.json()["id"] != first["id"] and FULL_TOKEN.fullmatch(again.json()["token"])


def test_the_worker_forgets_keys_older_than_24_hours(world: World, dev: Caller, clock: FrozenClock) -> None:
    svc = world.services
    dev.post(TOKENS, BODY, key="old-key")
    clock.advance(hours=1)
    dev.post(TOKENS, {**BODY, "name": "newer"}, key="new-key")
    worker = Worker(svc.reminders, svc.auto_revoke, idempotency=IdempotencyStore(svc.db, svc.clock))
    assert worker.run_once().idempotency_keys_pruned == 0
    clock.advance(hours=23, seconds=-1)
    assert worker.run_once().idempotency_keys_pruned == 0
    clock.advance(seconds=1)
    assert worker.run_once().idempotency_keys_pruned == 1
    with svc.db.read() as s:
        assert list(s.scalars(select(IdempotencyRecord.key))) == ["new-key"]


def test_an_error_answer_is_not_kept(world: World, dev: Caller) -> None:
    """Nothing was created, so the key is free again: a corrected retry with it creates."""
    r = dev.post(TOKENS, {**BODY, "scopes": ["audit.read"]}, key="fix-key")
    assert not error_problems(r, 422, "unheld_scope"), shown(r)
    assert count(world.services, IdempotencyRecord) == 0
    fixed = dev.post(TOKENS, BODY, key="fix-key")
    assert fixed.status_code == 201 and fixed.json()["token"] is not None, shown(fixed)


def test_roles_and_users_are_created_once(world: World, admin: Caller) -> None:
    svc = world.services
    role_body = {"name": "Auditors", "permissions": ["audit.read"]}
    role = admin.post("/api/v1/roles", role_body, key="role-key")
    replay = admin.post("/api/v1/roles", role_body, key="role-key")
    assert role.status_code == replay.status_code == 201
    assert replay.json() == role.json() and replay.headers[REPLAYED_HEADER] == "true"
    assert count(svc, Role, Role.name == "Auditors") == 1
    user_body = {"email": "new.person@acme.test", "roles": ["Auditors"]}
    user = admin.post("/api/v1/users", user_body, key="user-key")
    assert user.status_code == 201, shown(user)
    link = user.json()["invitation_url"]
    replay = admin.post("/api/v1/users", user_body, key="user-key")
    assert replay.status_code == 201 and replay.headers[REPLAYED_HEADER] == "true"
    # The invitation link is a secret like a token: shown once, never stored, null in the replay.
    assert replay.json() == {**user.json(), "invitation_url": None}
    assert_no_secret(link.rsplit("/", 1)[1], replay.text, "replayed answer")
    assert count(svc, User, User.email == "new.person@acme.test") == 1


def test_a_password_in_the_body_is_not_fingerprinted(world: World, admin: Caller) -> None:
    """No hash of a password is stored: bodies that differ only in a secret field have one fingerprint. (No
    create takes a password any more: adding a member answers an invitation link, and a password is refused.)"""
    from kbai.web.idempotency import fingerprint

    first = fingerprint({}, json.dumps({"email": "pw.person@acme.test", "password": "first-password-1"}).encode())
    other = fingerprint({}, json.dumps({"email": "pw.person@acme.test", "password": "other-password-2"}).encode())
    assert first == other == fingerprint({}, json.dumps({"email": "pw.person@acme.test"}).encode())
    r = admin.post("/api/v1/users", {"email": "pw.person@acme.test", "password": "first-password-1"}, key="pw-key")
    assert r.status_code == 422, shown(r)
    assert count(world.services, User, User.email == "pw.person@acme.test") == 0


def test_stored_answers_never_hold_a_secret(world: World, dev: Caller, admin: Caller) -> None:
    """Scan the whole table after a token create, a rotation and a user create with generated password."""
    svc = world.services
    secrets = [dev.post(TOKENS, BODY, key="scan-1").json()["token"]]
    rotated = dev.post(
        f"{TOKENS}/{dev.client.get(TOKENS).json()['tokens'][0]['id']}/rotate",
        {"grace_period_seconds": 60},
        key="scan-2",
    )
    secrets.append(rotated.json()["token"])
    secrets.append(
        admin.post("/api/v1/users", {"email": "scan@acme.test"}, key="scan-3")
        .json()["invitation_url"]
        .rsplit("/", 1)[1]
    )
    # The replays too: each answers with the secret field null.
    assert dev.post(TOKENS, BODY, key="scan-1").json()["token"] is None
    assert dev.post(rotated.request.url.path, {"grace_period_seconds": 60}, key="scan-2").json()["token"] is None
    assert admin.post("/api/v1/users", {"email": "scan@acme.test"}, key="scan-3").json()["invitation_url"] is None
    with svc.db.engine.connect() as conn:
        rows = [" | ".join(map(str, row)) for row in conn.execute(text("SELECT * FROM idempotency_keys"))]
    assert len(rows) == 3
    dump = "\n".join(rows)
    assert not FULL_TOKEN.search(dump), "a token-shaped string is stored in idempotency_keys"
    for secret in secrets:
        assert_no_secret(secret, dump, "idempotency_keys table")
        assert_no_secret(secret[-64:], dump, "idempotency_keys table")
    assert '"token": null' in dump or "'token': None" in dump  # the field is kept, its value is not


def test_a_malformed_key_is_400_and_creates_nothing(world: World, dev: Caller) -> None:
    for bad in ("", "k" * 256, "tab\there", "caf\u00e9".encode()):
        r = dev.post(TOKENS, BODY, headers={HEADER: bad})
        assert not error_problems(r, 400, "invalid_idempotency_key", "1 to 255 printable ASCII"), shown(r)
    two = dev.client.post(TOKENS, json=BODY, headers=[("X-CSRF-Token", dev.csrf), (HEADER, "a"), (HEADER, "b")])
    assert not error_problems(two, 400, "invalid_idempotency_key"), shown(two)
    assert tokens_named(world.services, BODY["name"]) == 0 and count(world.services, IdempotencyRecord) == 0
    assert dev.post(TOKENS, BODY, key="k" * 255).status_code == 201  # 255 printable ASCII is fine


# ---- a request that holds the key, and one that died holding it -------------------------------------
def _blocking_create(svc: Services) -> tuple[threading.Event, threading.Event, Callable[[], None]]:
    """Make token creation wait until told to: (entered, release, undo)."""
    entered, release = threading.Event(), threading.Event()
    real = svc.tokens.create

    def slow(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    svc.tokens.create = slow  # type: ignore[method-assign]

    def undo() -> None:
        svc.tokens.create = real  # type: ignore[method-assign]

    return entered, release, undo


def test_a_retry_while_the_first_runs_is_409_in_progress(world: World, dev: Caller) -> None:
    svc = world.services
    entered, release, undo = _blocking_create(svc)
    answers: list[httpx.Response] = []
    first = threading.Thread(target=lambda: answers.append(dev.post(TOKENS, BODY, key="busy-key")))
    first.start()
    try:
        assert entered.wait(60)
        r = dev.post(TOKENS, BODY, key="busy-key")
        assert not error_problems(r, 409, "idempotency_in_progress", "still being processed"), shown(r)
        assert r.headers["Retry-After"] == "1"
        # Another body with that key is still refused as another request.
        assert dev.post(TOKENS, {**BODY, "name": "x"}, key="busy-key").status_code == 422
    finally:
        release.set()
        first.join(60)
        undo()
    assert answers[0].status_code == 201 and answers[0].json()["token"] is not None
    replay = dev.post(TOKENS, BODY, key="busy-key")
    assert replay.status_code == 201 and replay.json()["id"] == answers[0].json()["id"]
    assert tokens_named(svc, BODY["name"]) == 1


def test_concurrent_creates_with_one_key_make_one_token(world: World, app: Any) -> None:
    svc = world.services
    parallel = 8
    # One client (and session) per thread, without a shared portal: the requests really run at once.
    callers = [Caller(TestClient(app), "dev@acme.test", "dev-password-1") for _ in range(parallel)]
    barrier = threading.Barrier(parallel)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def go(caller: Caller) -> None:
        barrier.wait(60)
        r = caller.post(TOKENS, BODY, key="race-key")
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=go, args=(c,)) for c in callers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for c in callers:
        c.client.close()
    assert len(answers) == parallel
    kinds = Counter(
        "created"
        if r.status_code == 201 and r.json()["token"]
        else "replayed"
        if r.status_code == 201
        else r.json()["error"]["code"]
        for r in answers
    )
    assert kinds["created"] == 1, kinds
    assert set(kinds) <= {"created", "replayed", "idempotency_in_progress"}, kinds
    assert tokens_named(svc, BODY["name"]) == 1


def test_a_claim_left_by_a_crash_is_taken_over_and_never_duplicates(
    world: World, dev: Caller, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented ordering: claim, create, answer. A process that dies after the create leaves a claim
    without an answer; retries are "in progress" for the lease, then run again and meet the create's own
    409 (name taken), never a second token."""
    svc = world.services

    def crash(*_: Any) -> None:
        raise RuntimeError("the process died before storing the answer")

    monkeypatch.setattr(IdempotencyStore, "finish", crash)
    first = dev.post(TOKENS, BODY, key="crash-key")
    assert first.status_code == 201  # the create committed; its answer still reached the client
    monkeypatch.undo()
    assert not error_problems(dev.post(TOKENS, BODY, key="crash-key"), 409, "idempotency_in_progress")
    clock.advance(seconds=idempotency.CLAIM_LEASE.total_seconds())
    r = dev.post(TOKENS, BODY, key="crash-key")
    assert not error_problems(r, 409, "name_taken"), shown(r)
    assert tokens_named(svc, BODY["name"]) == 1


# ---- rotation --------------------------------------------------------------------------------------
def test_rotate_retried_with_its_key_answers_the_same_successor(world: World, dev: Caller) -> None:
    svc = world.services
    old = dev.post(TOKENS, BODY).json()
    path = f"{TOKENS}/{old['id']}/rotate"
    first = dev.post(path, {"grace_period_seconds": 3600}, key="rot-1")
    assert first.status_code == 201, shown(first)
    again = dev.post(path, {"grace_period_seconds": 3600}, key="rot-1")
    assert again.status_code == 201 and again.headers[REPLAYED_HEADER] == "true"
    assert again.json() == {**first.json(), "token": None}
    assert count(svc, Token, Token.rotated_from_id == old["id"]) == 1
    assert tokens_named(svc, BODY["name"]) == 2


@pytest.mark.parametrize("grace", [0, 3600])
def test_rotating_a_rotated_token_is_409_naming_the_successor(world: World, dev: Caller, grace: int) -> None:
    """Fails on main with grace > 0: the old token was still active and got a second successor."""
    svc = world.services
    old = dev.post(TOKENS, BODY).json()
    path = f"{TOKENS}/{old['id']}/rotate"
    successor = dev.post(path, {"grace_period_seconds": grace}).json()
    r = dev.post(path, {"grace_period_seconds": grace})
    assert not error_problems(r, 409, "already_rotated", f"its successor is token {successor['id']}"), shown(r)
    # With another key too: a key never makes a second successor.
    r = dev.post(path, {"grace_period_seconds": grace}, key="rot-other")
    assert not error_problems(r, 409, "already_rotated"), shown(r)
    assert count(svc, Token, Token.rotated_from_id == old["id"]) == 1
    # The successor itself can be rotated.
    assert dev.post(f"{TOKENS}/{successor['id']}/rotate", {}).status_code == 201


def test_concurrent_rotations_make_exactly_one_successor(world: World) -> None:
    """Fails on main: several rotations of a token in its grace period each minted a successor."""
    svc = world.services
    old, _ = svc.tokens.create(world.dev, "rotated in a race", ["users.read"])
    parallel = 8
    barrier = threading.Barrier(parallel)
    outcomes: list[str] = []
    lock = threading.Lock()

    def rotate() -> None:
        barrier.wait(60)
        try:
            svc.tokens.rotate(world.dev, old.id, 3600)
            result = "ok"
        except KbaiError as exc:
            result = exc.code
        except Exception as exc:  # noqa: BLE001 - counted as a failure below
            result = f"unexpected {type(exc).__name__}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=rotate) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert Counter(outcomes) == Counter({"ok": 1, "already_rotated": parallel - 1})
    assert count(svc, Token, Token.rotated_from_id == old.id) == 1
    assert count(svc, Token, Token.name == "rotated in a race") == 2


# ---- the contract in the OpenAPI document ------------------------------------------------------------
def test_every_creating_post_declares_the_header(app: Any) -> None:
    """Every POST that answers 201 (a create) takes Idempotency-Key; nothing else advertises it."""
    schema = app.openapi()
    declares = {}
    for path, item in schema["paths"].items():
        for method, op in item.items():
            names = {(p["name"], p["in"]) for p in op.get("parameters", [])}
            declares[(method, path)] = ((HEADER, "header") in names, "201" in op.get("responses", {}))
    creating = {k for k, (_, created) in declares.items() if k[0] == "post" and created}
    assert {
        ("post", "/api/v1/tokens"),
        ("post", "/api/v1/tokens/{token_id}/rotate"),
        ("post", "/api/v1/roles"),
        ("post", "/api/v1/users"),
    } <= creating
    assert {k for k, (has, _) in declares.items() if has} == creating
    param = next(p for p in schema["paths"]["/api/v1/tokens"]["post"]["parameters"] if p["name"] == HEADER)
    assert param["required"] is False and param["schema"]["maxLength"] == 255
    assert "null" in param["description"]
    for method, path in creating:
        assert REPLAYED_HEADER in schema["paths"][path][method]["responses"]["201"]["headers"], path
    token_field = schema["components"]["schemas"]["TokenCreatedOut"]["properties"]["token"]
    assert "Idempotency-Key" in token_field["description"]


def test_the_expiry_constant_is_24_hours() -> None:
    assert timedelta(hours=24) == idempotency.KEEP_FOR

"""Crash safety: ``kill -9`` a busy ``kbai serve``, restart it on the same database, and nothing that was
acknowledged is lost, nothing is half-written, and the limits still hold (SQLite and PostgreSQL).

Several users, each with two threads on its own session, create and revoke tokens as fast as they can
(revoking with the session or with the token itself). Once enough writes have been acknowledged the
server gets SIGKILL mid-flight, then starts again on the same database, twice. Requests in flight at
the kill may have either outcome; only answered ones are held to account:

- every 201 creation exists, with the digest of the token we were given, and still authenticates
  (``GET /api/v1/me``) unless we revoked it;
- every 200 revocation stays revoked;
- every token row has exactly one ``token.create`` audit event, every revoked one a ``token.revoke``,
  and no such event names a token that does not exist;
- no user ever has more than 10 active tokens; the restarted server migrates (a no-op) and is healthy.
"""

from __future__ import annotations

import hashlib
import random
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import select, text

from kbai.services import Services
from kbai.store import Database
from kbai.store.models import AuditEvent, Token
from tests.conftest import OPERATOR, LiveServer, build_world, start_server

USERS = ("dev@acme.test", "ann@acme.test", "bob@acme.test", "cy@acme.test")
THREADS_PER_USER = 2
ACKS_BEFORE_KILL = 40  # acknowledged writes per cycle before the kill: progress, not time
CYCLES = 2
PASSWORD = "dev-password-1"
LIMIT = 10
SERVER_ENV = {"KBAI_AUTH_FAILURES_PER_MINUTE": "1000000", "KBAI_LOGIN_FAILURES_PER_MINUTE": "1000000"}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Ledger:
    """What the server acknowledged, shared by the client threads. Tokens are kept only in memory."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    created: dict[int, tuple[str, int, str]] = field(default_factory=dict)  # id -> (token, user id, worker); 201s
    revoked: set[int] = field(default_factory=set)  # 200s only
    tried_revoke: set[int] = field(default_factory=set)  # every revoke sent, answered or not
    acks: int = 0
    unexpected: list[str] = field(default_factory=list)  # answers no client should get, before the kill

    def ack(self) -> None:
        with self.lock:
            self.acks += 1


class Worker(threading.Thread):
    """One client: a session of ``email`` creating and revoking tokens until the server dies."""

    def __init__(
        self, name: str, url: str, email: str, user_id: int, ledger: Ledger, killing: threading.Event, seed: int
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.client = httpx.Client(base_url=url, timeout=120)  # generous: a busy CI machine is not a failure
        self.email, self.user_id, self.ledger, self.killing = email, user_id, ledger, killing
        self.random = random.Random(seed)
        self.csrf = ""
        self.made = 0
        self.cycle = 0

    def login(self) -> None:
        r = self.client.post("/api/v1/session", json={"email": self.email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]

    def run(self) -> None:
        try:
            while not self.killing.is_set():
                self.step()
        except Exception as exc:  # noqa: BLE001 - after the kill any failure is expected; before it, none is
            if not self.killing.is_set():
                self.note(f"{type(exc).__name__} before the kill")
        finally:
            self.client.close()

    def note(self, what: str) -> None:
        with self.ledger.lock:
            self.ledger.unexpected.append(f"{self.name}: {what}")

    def mine_active(self) -> list[int]:
        """Tokens this worker (slot) made and has not tried to revoke: no other thread touches them."""
        with self.ledger.lock:
            return [
                i
                for i, (_, _, worker) in self.ledger.created.items()
                if worker == self.name and i not in self.ledger.tried_revoke
            ]

    def step(self) -> None:
        active = self.mine_active()
        if active and (len(active) >= 4 or self.random.random() < 0.4):
            self.revoke(self.random.choice(active))
        else:
            self.create()

    def create(self) -> None:
        self.made += 1
        body = {"name": f"{self.name}-c{self.cycle}-{self.made}", "scopes": ["users.read"]}
        r = self.client.post("/api/v1/tokens", json=body, headers={"X-CSRF-Token": self.csrf})
        if r.status_code == 201:
            made = r.json()
            with self.ledger.lock:
                self.ledger.created[made["id"]] = (made["token"], self.user_id, self.name)
            self.ledger.ack()
        elif r.status_code == 409 and r.json()["error"]["code"] == "token_limit_reached":
            mine = self.mine_active()
            if mine:
                self.revoke(min(mine))
                return
            # The other thread holds the rest, or creations answered by no one (in flight at a kill) do:
            # those belong to no worker, so revoking them (idempotently, with the session) races with nobody.
            listed = self.client.get("/api/v1/tokens").json()["tokens"]
            with self.ledger.lock:
                orphans = [t["id"] for t in listed if t["status"] == "active" and t["id"] not in self.ledger.created]
            if orphans:
                self.revoke(min(orphans), by_token=False)
        else:
            self.note(f"create answered {r.status_code}")

    def revoke(self, token_id: int, by_token: bool | None = None) -> None:
        with self.ledger.lock:
            self.ledger.tried_revoke.add(token_id)
            token = self.ledger.created.get(token_id, ("", 0, ""))[0]
        if by_token is None:
            by_token = bool(token) and self.random.random() < 0.3
        headers = {"Authorization": f"Bearer {token}"} if by_token else {"X-CSRF-Token": self.csrf}
        client = httpx.Client(base_url=str(self.client.base_url), timeout=120) if by_token else self.client
        try:
            r = client.post(f"/api/v1/tokens/{token_id}/revoke", headers=headers)
        finally:
            if by_token:
                client.close()
        if r.status_code == 200 and r.json()["status"] == "revoked":
            with self.ledger.lock:
                self.ledger.revoked.add(token_id)
            self.ledger.ack()
        else:
            self.note(f"revoke answered {r.status_code}")


def _wait_for(ledger: Ledger, target: int, workers: list[Worker]) -> None:
    """Until ``target`` writes are acknowledged; fails if the clients all die or stop making progress."""
    idle = threading.Event()
    last, quiet = -1, 0
    while True:
        with ledger.lock:
            acks = ledger.acks
        if acks >= target:
            return
        assert any(w.is_alive() for w in workers), f"every client stopped: {ledger.unexpected[:5]}"
        quiet = quiet + 1 if acks == last else 0
        assert quiet < 3000, f"no progress: {acks} acknowledged writes, {ledger.unexpected[:5]}"  # ~60 s stalled
        last = acks
        idle.wait(0.02)


def _audit_problems(db: Database) -> list[str]:
    """Half-written state in the database: a token without its audit event, or the other way round."""
    problems: list[str] = []
    with db.read() as s:
        tokens = {t.id: t for t in s.scalars(select(Token))}
        events = s.execute(
            select(AuditEvent.action, AuditEvent.target_id).where(
                AuditEvent.action.in_(["token.create", "token.revoke"])
            )
        ).all()
    creates = Counter(target for action, target in events if action == "token.create")
    revokes = Counter(target for action, target in events if action == "token.revoke")
    for token_id, token in tokens.items():
        if creates[str(token_id)] != 1:
            problems.append(f"token {token_id} has {creates[str(token_id)]} token.create events")
        if token.revoked_at is not None and revokes[str(token_id)] != 1:
            problems.append(f"revoked token {token_id} has {revokes[str(token_id)]} token.revoke events")
        if token.revoked_at is None and revokes[str(token_id)]:
            problems.append(f"token {token_id} has a token.revoke event but is not revoked")
    orphans = {t for t in set(creates) | set(revokes) if t is None or not t.isdigit() or int(t) not in tokens}
    if orphans:
        problems.append(f"audit events name tokens that do not exist: {sorted(orphans)[:10]}")
    return problems


def _check_after_restart(server: LiveServer, db: Database, ledger: Ledger, user_ids: list[int]) -> None:
    with server.client() as client:
        assert client.get("/healthz").json()["status"] == "ok"
        with db.read() as s:
            rows = {t.id: t for t in s.scalars(select(Token))}
        lost = sorted(i for i in ledger.created if i not in rows)
        assert not lost, f"acknowledged creations lost: {lost}"
        wrong = sorted(
            i
            for i, (token, uid, _) in ledger.created.items()
            if rows[i].digest != _digest(token) or rows[i].user_id != uid
        )
        assert not wrong, f"stored tokens differ from what was handed out: {wrong}"
        unrevoked = sorted(i for i in ledger.revoked if rows[i].revoked_at is None)
        assert not unrevoked, f"acknowledged revocations lost: {unrevoked}"

        problems = []
        for token_id, (token, _uid, _worker) in sorted(ledger.created.items()):
            r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            if token_id in ledger.revoked:
                if r.status_code != 401 or "revoked" not in r.json()["error"]["message"]:
                    problems.append(f"{token_id}: revoked, but /me says {r.status_code}")
            elif r.status_code == 200:
                if r.json().get("token_id") != token_id:
                    problems.append(f"{token_id}: /me names another token")
            elif not (token_id in ledger.tried_revoke and r.status_code == 401 and rows[token_id].revoked_at):
                # Only a revoke that was in flight at the kill may have landed unacknowledged.
                problems.append(f"{token_id}: created, never revoked, but /me says {r.status_code}")
        assert not problems, problems

    problems = _audit_problems(db)
    assert not problems, problems
    now = datetime.now(UTC)
    for uid in user_ids:
        active = sum(
            1
            for t in rows.values()
            if t.user_id == uid
            and (t.revoked_at is None or t.revoked_at > now)
            and (t.expires_at is None or t.expires_at > now)
        )
        assert active <= LIMIT, f"user {uid} has {active} active tokens"
    with db.engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert len(versions) == 1, versions


def test_kill_9_under_load_loses_nothing_acknowledged(services: Services, database_url: str, tmp_path: Path) -> None:
    world = build_world(services)
    for email in USERS[1:]:
        services.access.create_user(OPERATOR, world.tenant_id, email, PASSWORD, [world.dev_role_id])
    user_ids = []
    for email in USERS:
        user = services.access.user_by_email(email)
        assert user is not None
        user_ids.append(user.id)
    db = Database(database_url)
    ledger = Ledger()
    server = start_server(database_url, tmp_path, **SERVER_ENV)
    try:
        for cycle in range(CYCLES):
            killing = threading.Event()
            workers = [
                Worker(f"u{u}t{t}", server.url, email, user_ids[u], ledger, killing, seed=cycle * 100 + u * 10 + t)
                for u, email in enumerate(USERS)
                for t in range(THREADS_PER_USER)
            ]
            for w in workers:
                w.cycle = cycle
                w.login()
            for w in workers:
                w.start()
            with ledger.lock:
                target = ledger.acks + ACKS_BEFORE_KILL
            _wait_for(ledger, target, workers)

            killing.set()
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            for w in workers:
                w.join(timeout=60)
            assert not any(w.is_alive() for w in workers), "a client hung after the kill"
            assert not ledger.unexpected, ledger.unexpected[:10]

            server = start_server(database_url, tmp_path, **SERVER_ENV)  # migrates again: must be a no-op
            _check_after_restart(server, db, ledger, user_ids)
        assert len(ledger.created) >= CYCLES * ACKS_BEFORE_KILL // 2 and ledger.revoked
        log = server.log.read_text()
        assert "Traceback" not in log and '"level": "ERROR"' not in log
    finally:
        server.stop()
        db.dispose()

"""The example contacts service as a real process, and a tenant whose tokens exercise every answer it gives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from kbai.clock import FrozenClock
from kbai.services import Services
from kbai.store.audit import Actor
from tests.conftest import OPERATOR, World, build_world, free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PERMISSIONS = EXAMPLES / "permissions.toml"
TOKEN_RE = re.compile(r"kbai_pk_[0-9a-f]{64}")
PASSWORD = "a-long-password-1"


class Secret(str):
    """A token that never shows itself in a repr (pytest assertion output, logs of the test run)."""

    def __repr__(self) -> str:
        return f"<token {self[:12]}…>"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def contacts_env(**extra: str) -> dict[str, str]:
    """The test run's environment without any KBAI_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class ContactsService:
    """The example service (examples/contacts_service.py) running in its own process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> int:
        """SIGTERM, so uvicorn runs the lifespan shutdown (which flushes last-used)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_contacts(env: dict[str, str], log_dir: Path, *, as_script: bool = False) -> ContactsService:
    """``uvicorn examples.contacts_service:app`` (or ``python examples/contacts_service.py``) on a free port."""
    port = free_port()
    if as_script:
        cmd = [sys.executable, str(EXAMPLES / "contacts_service.py"), "--port", str(port)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.contacts_service:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    log = log_dir / f"contacts-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    service = ContactsService(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the contacts service exited with {proc.returncode}: {service.output()[-2000:]}")
        try:
            if httpx.get(service.url + "/healthz", timeout=1).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the contacts service did not come up: {service.output()[-2000:]}")


@dataclass
class Scenario:
    """Acme (and Globex) with one token per case. Made through the normal domain, as a user would.

    dev holds contacts.read + contacts.write; ana's role will lose contacts.read; leo will be
    deactivated. ``expired`` was created two days ago with a one-day lifetime.
    """

    services: Services
    world: World
    reader: Secret  # dev: contacts.read
    writer: Secret  # dev: contacts.read + contacts.write
    revoked: Secret  # dev: contacts.read, revoked during the test
    revoked_id: int
    expired: Secret  # dev: contacts.read, expired a day ago
    expired_id: int
    role_lost: Secret  # ana: contacts.read, then her role loses it
    ana_role_id: int
    leaver: Secret  # leo: contacts.read, then leo is deactivated
    leo_id: int
    globex_writer: Secret  # another tenant: sees only its own contacts
    all_tokens: list[str] = field(default_factory=list)

    def actor(self, email: str) -> Actor:
        return self.world.actor(email)

    def lose_permission(self) -> None:
        self.services.access.update_role(OPERATOR, self.ana_role_id, ["developer.manage_tokens"])

    def deactivate_leaver(self) -> None:
        self.services.access.deactivate_user(OPERATOR, self.leo_id)


def _token(svc: Services, actor: Actor, name: str, scopes: list[str], **kw: object) -> tuple[Secret, int]:
    view, plaintext = svc.tokens.create(actor, name, scopes, **kw)
    return Secret(plaintext), view.id


def build_scenario(svc: Services) -> Scenario:
    contacts = ["contacts.read", "contacts.write"]
    world = build_world(svc)
    tenant = world.tenant_id
    svc.access.update_role(OPERATOR, world.dev_role_id, ["developer.manage_tokens", *contacts])
    readers = svc.access.create_role(OPERATOR, tenant, "Contact readers", ["developer.manage_tokens", "contacts.read"])
    contractors = svc.access.create_role(OPERATOR, tenant, "Contractors", ["developer.manage_tokens", "contacts.read"])
    svc.access.create_user(OPERATOR, tenant, "ana@acme.test", PASSWORD, [readers.id])
    leo, _ = svc.access.create_user(OPERATOR, tenant, "leo@acme.test", PASSWORD, [contractors.id])

    dev = world.actor("dev@acme.test")
    reader, _ = _token(svc, dev, "Contacts sync (read)", ["contacts.read"])
    writer, _ = _token(svc, dev, "Contacts import", contacts)
    revoked, revoked_id = _token(svc, dev, "Old cron job", ["contacts.read"])
    role_lost, _ = _token(svc, world.actor("ana@acme.test"), "Ana's script", ["contacts.read"])
    leaver, _ = _token(svc, world.actor("leo@acme.test"), "Leo's export", ["contacts.read"])

    # Same database, a clock two days back: a token that lived one day and is now expired.
    past = Services.build(svc.settings, clock=FrozenClock(datetime.now(UTC) - timedelta(days=2)), db=svc.db)
    expired, expired_id = _token(past, dev, "Last week's test", ["contacts.read"], expires_in_days=1)

    globex = build_world(svc, "Globex", "globex.test")
    svc.access.update_role(OPERATOR, globex.dev_role_id, ["developer.manage_tokens", *contacts])
    globex_writer, _ = _token(svc, globex.actor("dev@globex.test"), "Globex CRM", contacts)

    scenario = Scenario(
        svc,
        world,
        reader,
        writer,
        revoked,
        revoked_id,
        expired,
        expired_id,
        role_lost,
        readers.id,
        leaver,
        leo.id,
        globex_writer,
    )
    scenario.all_tokens = [reader, writer, revoked, expired, role_lost, leaver, globex_writer]
    return scenario


def assert_refused(r: httpx.Response, status: int, code: str, *, message: str | None = None) -> None:
    """A refusal in kbai's shape, with the RFC 6750 challenge that goes with it."""
    assert r.status_code == status, f"expected {status} {code}, got {r.status_code}: {r.text}"
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    if message is not None:
        assert body["error"]["message"] == message, body
    challenge = r.headers.get("www-authenticate", "")
    if code in ("invalid_token", "insufficient_scope"):
        assert challenge.startswith('Bearer realm="kbai"') and f'error="{code}"' in challenge, challenge
    elif code == "not_authenticated":
        assert challenge == 'Bearer realm="kbai"', challenge
    else:
        assert challenge == "", challenge


def assert_no_token_in(text: str, tokens: list[str], where: str) -> None:
    leaked = any(t in text for t in tokens) or TOKEN_RE.search(text) is not None
    assert not leaked, f"a full token appears in {where}"


MALFORMED = ["kbai_pk_123", "kbai_pk_" + "A" * 64, "not-a-token", "kbai_pk_" + "0" * 63 + "g"]


def check_contract(
    client: httpx.Client, sc: Scenario, *, revoke: Callable[[], object], messages: dict[str, str]
) -> None:
    """Everything the example service must accept and refuse, in one pass over one running process.

    ``revoke`` revokes ``sc.revoked``; ``messages`` maps kbai outcomes (revoked, expired,
    owner_inactive, unknown) to the exact message this mode must answer with.
    """
    # A read token reads; a write token writes; each tenant sees only its own contacts.
    r = client.get("/contacts", headers=bearer(sc.reader))
    assert r.status_code == 200, r.text
    assert r.json() == {"contacts": []}
    r = client.post("/contacts", headers=bearer(sc.writer), json={"name": "Grace Hopper", "email": "grace@navy.test"})
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == "dev@acme.test"
    r = client.get("/contacts", headers=bearer(sc.reader))
    assert r.status_code == 200, r.text
    assert [c["name"] for c in r.json()["contacts"]] == ["Grace Hopper"]
    r = client.get("/contacts", headers=bearer(sc.globex_writer))
    assert r.status_code == 200, r.text
    assert r.json() == {"contacts": []}

    # The read token cannot write: 403 insufficient_scope naming the missing scope; nothing stored.
    r = client.post("/contacts", headers=bearer(sc.reader), json={"name": "Mallory", "email": "m@evil.test"})
    assert_refused(r, 403, "insufficient_scope")
    assert 'scope="contacts.write"' in r.headers["www-authenticate"]
    assert "contacts.write" in r.json()["error"]["message"]
    r = client.get("/contacts", headers=bearer(sc.writer))
    assert r.status_code == 200, r.text
    assert len(r.json()["contacts"]) == 1

    # No header, a non-Bearer scheme, malformed and unknown tokens: 401.
    r = client.get("/contacts")
    assert_refused(r, 401, "not_authenticated")
    r = client.get("/contacts", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_refused(r, 401, "invalid_token")
    for bad in MALFORMED:
        r = client.get("/contacts", headers=bearer(bad))
        assert_refused(r, 401, "invalid_token", message=messages["malformed"])
    r = client.get("/contacts", headers=bearer("kbai_pk_" + "0123456789abcdef" * 4))
    assert_refused(r, 401, "invalid_token", message=messages["unknown"])

    # Expired a day ago: 401.
    r = client.get("/contacts", headers=bearer(sc.expired))
    assert_refused(r, 401, "invalid_token", message=messages["expired"])

    # Works, then revoked: 401 on the next request.
    r = client.get("/contacts", headers=bearer(sc.revoked))
    assert r.status_code == 200, r.text
    revoke()
    r = client.get("/contacts", headers=bearer(sc.revoked))
    assert_refused(r, 401, "invalid_token", message=messages["revoked"])

    # Works, then the owner's role loses contacts.read: the token is still a token, but lacks the scope.
    r = client.get("/contacts", headers=bearer(sc.role_lost))
    assert r.status_code == 200, r.text
    sc.lose_permission()
    r = client.get("/contacts", headers=bearer(sc.role_lost))
    assert_refused(r, 403, "insufficient_scope")
    assert 'scope="contacts.read"' in r.headers["www-authenticate"]

    # Works, then the owner is deactivated: 401.
    r = client.get("/contacts", headers=bearer(sc.leaver))
    assert r.status_code == 200, r.text
    sc.deactivate_leaver()
    r = client.get("/contacts", headers=bearer(sc.leaver))
    assert_refused(r, 401, "invalid_token", message=messages["owner_inactive"])

    # The unaffected tokens still work, and exempt paths need no token.
    r = client.get("/contacts", headers=bearer(sc.reader))
    assert r.status_code == 200, r.text
    r = client.get("/healthz")
    assert r.status_code == 200, r.text

"""Issue 13's webhook findings, each reproduced as its review did it, against real receivers and servers:

- finding 2 (SSRF): internal, metadata and numeric-trick URLs are refused at save time (API and page,
  a 422 naming why) and at send time; kbai connects to exactly the address it checked; no redirects;
- finding 3: a receiver trickling one byte at a time neither blocks another tenant's login nor a
  revocation on SQLite, and the send gives up at the deadline (webhook and SMTP);
- finding 12: the audit log keeps a webhook URL's scheme and host only, and no log line holds it;
- finding 15: webhook secrets are encrypted at rest (the database never holds one in clear), with a
  0600 key file beside a SQLite database when no key is set, and refused on PostgreSQL without a key.

Loopback receivers need the operator's allowlist (KBAI_WEBHOOK_ALLOWED_NETWORKS); this module's
default services have none, which is kbai's default.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url

from kbai import egress
from kbai.app import create_app
from kbai.clock import FrozenClock, iso
from kbai.config import Settings
from kbai.delivery.mail import DeadlineExceeded, Mailer
from kbai.delivery.webhooks import WebhookFailed, Webhooks
from kbai.lifecycle.worker import Worker
from kbai.services import Services
from kbai.store.models import AuditEvent, OutboxMessage, TenantPolicy
from tests.conftest import FAST_ARGON2, KBAI_BIN, OPERATOR, TEST_ENCRYPTION_KEY, World, build_world, server_env
from tests.lifecycle.conftest import LOCAL_RECEIVERS, Mailbox, Trickler, WebhookReceiver, login
from tests.store.test_no_plaintext import _pg_dump, _raw_files, _sql_dump

PUBLIC = "https://93.184.215.14"  # a public address literal: accepted without DNS (no request is made to it)


@pytest.fixture
def settings(database_url: str, mailbox: Mailbox) -> Settings:
    return Settings(
        database_url=database_url,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_from="kbai@acme.test",
        **FAST_ARGON2,
    )


def allowing(svc: Services, clock: FrozenClock, **more: Any) -> Services:
    """The same database, as an operator who allows receivers on 127.0.0.1 runs it."""
    return Services.build(
        svc.settings.model_copy(update={"webhook_allowed_networks": LOCAL_RECEIVERS, **more}), clock=clock
    )


def _put(client: TestClient, csrf: str, **body: object) -> httpx.Response:
    return client.put("/api/v1/policies", headers={"X-CSRF-Token": csrf}, json=body)


# ---- finding 2: SSRF ----------------------------------------------------------------------------
REFUSED = [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local"),
    ("http://localhost:6379/", "loopback"),
    ("http://[::1]:5432/", "loopback"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ("http://METADATA.google.internal./computeMetadata/v1/", "cloud metadata"),
    ("http://127.0.0.1:8000/internal-admin/users", "loopback"),
    ("http://2130706433/", "loopback"),  # 127.0.0.1 as one number
    ("http://0x7f000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://10.0.0.5/", "private"),
    ("http://172.16.3.4/", "private"),
    ("http://192.168.1.10/", "private"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://[fd00::1]/", "unique-local"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[::ffff:127.0.0.1]/", "embedding a loopback"),
    ("http://[::ffff:169.254.169.254]/", "embedding a link-local"),
    ("http://[2002:7f00:1::]/", "embedding a loopback"),  # 6to4 around 127.0.0.1
    ("http://0.0.0.0:8080/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.0.192/", "IETF protocol"),  # Oracle Cloud's metadata
    ("http://198.18.0.1/", "special-purpose"),
]


def test_finding2_internal_webhook_urls_are_refused_at_save_time(world: World, client: TestClient) -> None:
    svc = world.services
    csrf = login(client, "admin@acme.test", "admin-password-1")
    for url, why in REFUSED:
        r = _put(client, csrf, webhook_url=url)
        assert r.status_code == 422, (url, r.text)
        error = r.json()["error"]
        assert error["code"] == "webhook_url_refused" and why in error["message"], (url, error)
        assert "KBAI_WEBHOOK_ALLOWED_NETWORKS" in error["message"]
    policy = svc.policies.get(world.tenant_id)
    assert not policy.webhook_configured and policy.webhook_url is None
    with svc.db.read() as s:
        assert list(s.scalars(select(AuditEvent).where(AuditEvent.action == "policy.update"))) == []
    # The operator's CLI is held to the same rule.
    with pytest.raises(Exception) as info:
        svc.policies.set(OPERATOR, world.tenant_id, webhook_url="http://169.254.169.254/")
    assert getattr(info.value, "code", None) == "webhook_url_refused"
    # Public addresses pass, and so does a name that does not resolve (yet): it is checked at every send.
    assert _put(client, csrf, webhook_url=PUBLIC + "/hooks").status_code == 200
    assert _put(client, csrf, webhook_url="https://hooks.kbai-test.invalid/kbai").status_code == 200


def test_finding2_the_policy_page_refuses_them_with_the_reason(world: World, client: TestClient) -> None:
    login(client, "admin@acme.test", "admin-password-1")
    page = client.get("/system-settings/token-policy")
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = client.post(
        "/system-settings/token-policy",
        data={"webhook_url": "http://169.254.169.254/latest/meta-data/", "csrf_token": csrf},
    )
    assert r.status_code == 422
    assert "webhook_url is refused: its address is a link-local address" in r.text
    assert world.services.policies.get(world.tenant_id).webhook_url is None


def test_finding2_the_allowlist_admits_internal_receivers_but_never_metadata_or_0000(
    world: World, clock: FrozenClock
) -> None:
    svc = allowing(world.services, clock, webhook_allowed_networks="0.0.0.0/0,::/0")
    for url in ("http://127.0.0.1:9/", "http://10.0.0.5/", "http://[::1]:8080/"):
        svc.policies.set(OPERATOR, world.tenant_id, webhook_url=url)
        assert svc.policies.get(world.tenant_id).webhook_url == url
    for url in ("http://metadata.google.internal/", "http://0.0.0.0/", "http://224.0.0.1/"):
        with pytest.raises(Exception) as info:
            svc.policies.set(OPERATOR, world.tenant_id, webhook_url=url)
        assert getattr(info.value, "code", None) == "webhook_url_refused", url
    svc.close()


def test_finding2_a_name_with_one_internal_address_is_refused() -> None:
    guard = egress.Guard(resolve=lambda host, port: ["93.184.215.14", "10.1.2.3"])
    with pytest.raises(egress.Refused) as info:
        guard.addresses("mixed.kbai-test.invalid", 443, 5)
    assert info.value.reason == "its host resolves to a private network address"
    assert egress.Guard(resolve=lambda h, p: ["93.184.215.14"]).addresses("ok.invalid", 443, 5) == ["93.184.215.14"]


def test_finding2_send_time_check_refuses_an_address_that_is_no_longer_allowed(
    world: World, clock: FrozenClock, webhook: WebhookReceiver
) -> None:
    """Saved while the operator allowed loopback receivers; the operator then removed the allowlist. The worker
    refuses to send (the receiver hears nothing) and says why, without the URL's path."""
    svc = world.services
    before = allowing(svc, clock)
    before.policies.set(world.admin, world.tenant_id, webhook_url=webhook.url.replace("127.0.0.1", "localhost"))
    before.close()
    svc.tokens.create(world.dev, "n8n", ["users.read"], expires_in_days=8)
    clock.advance(days=1)
    result = Worker(svc.reminders, svc.auto_revoke).run_once()
    assert result.reminders_sent == 2 and result.deliveries_failed == 1
    assert webhook.events == []
    with svc.db.read() as s:
        (hook,) = s.scalars(select(OutboxMessage).where(OutboxMessage.channel == "webhook"))
    assert hook.sent_at is None and hook.last_error == "refused: its host resolves to a loopback address"
    assert hook.next_attempt_at > clock.now()  # tried again later, in case the operator allows it again


class _Receiver:
    """A loopback HTTP server recording (Host header, path) of each request and answering ``status``."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.seen: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.seen.append((self.headers.get("host", ""), self.path))
                self.send_response(status)
                if location:
                    self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[_Receiver]]:
    made: list[_Receiver] = []
    yield made
    for r in made:
        r.close()


def test_finding2_kbai_connects_to_the_address_it_checked(receivers: list[_Receiver]) -> None:
    """DNS rebinding: the name answers an allowed address to the check and an internal one right after. kbai
    resolves once per delivery and connects to what it checked; the Host header still names the host."""
    receiver = _Receiver()
    receivers.append(receiver)
    answers = [["127.0.0.1"], ["169.254.169.254"]]
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), 2) - 1]

    guard = egress.Guard([egress.ipaddress.ip_network("127.0.0.1/32")], resolve=rebinding)
    hooks = Webhooks(FrozenClock(), guard, 5)
    url = f"http://rebind.kbai-test.invalid:{receiver.port}/hooks/kbai"
    hooks.post(url, "whsec_c2VjcmV0", "token.expiry_reminder", {}, event_id="e1", created_at=FrozenClock().now())
    assert asked == ["rebind.kbai-test.invalid"]  # one lookup: the one that was checked
    assert receiver.seen == [(f"rebind.kbai-test.invalid:{receiver.port}", "/hooks/kbai")]
    with pytest.raises(WebhookFailed, match="refused: its host resolves to a link-local address"):
        hooks.post(url, "whsec_c2VjcmV0", "token.expiry_reminder", {}, event_id="e2", created_at=FrozenClock().now())
    assert len(receiver.seen) == 1


def test_finding2_redirects_are_not_followed(receivers: list[_Receiver]) -> None:
    inner = _Receiver()
    outer = _Receiver(status=307, location=f"http://127.0.0.1:{inner.port}/internal-admin/")
    receivers.extend([inner, outer])
    hooks = Webhooks(FrozenClock(), egress.Guard.from_setting(LOCAL_RECEIVERS), 5)
    with pytest.raises(WebhookFailed, match="answered 307"):
        hooks.post(
            f"http://127.0.0.1:{outer.port}/hook",
            "whsec_c2VjcmV0",
            "t",
            {},
            event_id="e",
            created_at=FrozenClock().now(),
        )
    assert len(outer.seen) == 1 and inner.seen == []


# ---- finding 3: a slow receiver holds nothing ---------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite"])
def test_finding3_a_trickling_webhook_blocks_no_other_tenants_login_or_revocation(
    world: World, clock: FrozenClock, trickler: Trickler
) -> None:
    """Tenant Acme's receiver answers one byte every half second, forever. While the worker's delivery to it is
    in flight, Globex's admin logs in and a leaked Globex token is revoked (both writes, on SQLite's one write
    lock); both succeed while the delivery is still in flight, the revoked token stops at once, and the
    delivery gives up at its deadline (the receiver sees kbai hang up) instead of holding on."""
    svc = world.services
    sender = allowing(svc, clock, outbound_deadline_seconds=8)
    sender.policies.set(world.admin, world.tenant_id, webhook_url=trickler.url)
    svc.tokens.create(world.dev, "Zapier", ["users.read"], expires_in_days=8)
    globex = build_world(svc, "Globex", "globex.test")
    _leaked, leaked = svc.tokens.create(globex.dev, "leaked", ["users.read"])
    clock.advance(days=1)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(Worker(sender.reminders, sender.auto_revoke).run_once()))
    worker.start()
    assert trickler.connected.wait(60), "the delivery never reached the receiver"
    with TestClient(create_app(svc, start_background=False)) as client:
        r = client.post("/api/v1/session", json={"email": "admin@globex.test", "password": "admin-password-1"})
        assert r.status_code == 200, r.text
        r = client.post(f"/api/v1/tokens/{_leaked.id}/revoke", headers={"Authorization": f"Bearer {leaked}"})
        assert r.status_code == 200 and r.json()["status"] == "revoked", r.text
        still_in_flight = not trickler.finished.is_set()
        assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {leaked}"}).status_code == 401
    assert still_in_flight, "the login and the revocation waited for the delivery"
    worker.join(120)
    assert not worker.is_alive()
    assert trickler.finished.wait(30)
    assert trickler.closed_by_peer and not trickler.hit_cap  # kbai gave up; the receiver would have gone on
    (result,) = results
    assert result.reminders_sent == 2 and result.deliveries_failed == 1
    with svc.db.read() as s:
        (hook,) = s.scalars(select(OutboxMessage).where(OutboxMessage.channel == "webhook"))
    assert hook.last_error == "no answer within the 8 s deadline" and hook.sent_at is None
    sender.close()


def test_finding3_smtp_gives_up_at_the_deadline(trickler: Trickler) -> None:
    """smtplib's timeout is per read: a server trickling its greeting would hold a sender for ever."""
    trickler.greet = b"220-slow.kbai-test ESMTP "
    mailer = Mailer("127.0.0.1", trickler.port, "kbai@acme.test", deadline_seconds=2)
    with pytest.raises(DeadlineExceeded, match="2 s deadline"):
        mailer.send("dev@acme.test", "subject", "body")
    assert trickler.finished.wait(30)
    assert trickler.closed_by_peer and not trickler.hit_cap and trickler.sent > 1


# ---- finding 12: the URL in the audit log and the logs -----------------------------------------------
SECRET_URL_PART = "s3cret-path"


def test_finding12_the_audit_log_keeps_only_scheme_and_host(world: World, client: TestClient) -> None:
    csrf = login(client, "admin@acme.test", "admin-password-1")
    assert (
        _put(client, csrf, webhook_url=f"{PUBLIC}/hooks/{SECRET_URL_PART}?key=q-{SECRET_URL_PART}").status_code == 200
    )
    assert _put(client, csrf, webhook_url=f"{PUBLIC}:8443/other-{SECRET_URL_PART}").status_code == 200
    assert _put(client, csrf, webhook_url=None).status_code == 200
    events = client.get("/api/v1/audit", params={"action": "policy.update"}).json()["events"]
    changes = [e["details"]["changes"]["webhook_url"] for e in reversed(events)]
    assert changes == [{"from": None, "to": PUBLIC}, {"from": PUBLIC, "to": PUBLIC}, {"from": PUBLIC, "to": None}]
    exported = client.get("/api/v1/audit/export", params={"format": "json"}).text
    with world.services.db.read() as s:
        stored = json.dumps([e.details for e in s.scalars(select(AuditEvent))])
    for where in (json.dumps(events), exported, stored):
        assert SECRET_URL_PART not in where and "8443" not in where


def test_finding12_no_log_line_holds_the_webhook_url(
    world: World,
    clock: FrozenClock,
    database_url: str,
    mailbox: Mailbox,
    webhook: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real `kbai worker --once` at DEBUG delivers one event and fails another; neither its output nor this
    process's log (a delivery in-process, everything captured at DEBUG) holds the URL's path or query."""
    svc = allowing(world.services, clock)
    svc.policies.set(world.admin, world.tenant_id, webhook_url=f"{webhook.url}/{SECRET_URL_PART}?key=q")
    svc.tokens.create(world.dev, "first", ["users.read"], expires_in_days=8)
    env = server_env(
        database_url,
        KBAI_FAKE_NOW=iso(clock.now() + timedelta(days=1)) or "",
        KBAI_WEBHOOK_ALLOWED_NETWORKS=LOCAL_RECEIVERS,
        KBAI_LOG_LEVEL="DEBUG",
    )
    done = subprocess.run([KBAI_BIN, "worker", "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert "deliveries: 1" in done.stdout, done.stdout + done.stderr
    assert len(webhook.events) == 1
    webhook.status = 503
    svc.tokens.create(world.dev, "second", ["users.read"], expires_in_days=8)
    caplog.set_level("DEBUG")
    clock.advance(days=1)
    assert svc.reminders.send_due().sent
    assert "answered 503" in caplog.text  # the failure is logged ...
    for output in (done.stdout, done.stderr, caplog.text):
        assert SECRET_URL_PART not in output and "key=q" not in output  # ... without the URL
    svc.close()


# ---- finding 15: webhook secrets at rest ---------------------------------------------------------------
def test_finding15_the_database_never_holds_a_webhook_secret_in_clear(
    world: World, client: TestClient, backend: str
) -> None:
    svc = world.services
    csrf = login(client, "admin@acme.test", "admin-password-1")
    first = _put(client, csrf, webhook_url=PUBLIC + "/hooks").json()["webhook_secret"]
    second = _put(client, csrf, new_webhook_secret=True).json()["webhook_secret"]
    assert first != second and first.startswith("whsec_") and second.startswith("whsec_")
    dumps = {"rows": _sql_dump(svc)}
    dumps.update(
        {"raw file bytes": _raw_files(svc).decode("latin-1")} if backend == "sqlite" else {"pg_dump": _pg_dump(svc)}
    )
    for what, dump in dumps.items():
        for secret in (first, second):
            body = secret.removeprefix("whsec_")
            assert body not in dump and body[:20] not in dump, f"a webhook secret is in the {what}"
    with svc.db.read() as s:
        sealed = s.get(TenantPolicy, world.tenant_id).webhook_secret_encrypted  # type: ignore[union-attr]
    assert sealed is not None and sealed in dumps["rows"]
    assert Fernet(TEST_ENCRYPTION_KEY.encode()).decrypt(sealed.encode()).decode() == second


def test_finding15_without_a_key_sqlite_keeps_one_in_a_0600_file_and_postgres_refuses(
    world: World, clock: FrozenClock, backend: str
) -> None:
    svc = Services.build(world.services.settings.model_copy(update={"encryption_key": None}), clock=clock)
    if backend == "sqlite":
        db_file = Path(make_url(svc.settings.database_url).database or "")
        key_file = db_file.with_name(db_file.name + ".key")
        assert not key_file.exists()
        _policy, secret = svc.policies.set(world.admin, world.tenant_id, webhook_url=PUBLIC + "/hooks")
        assert secret is not None
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        with svc.db.read() as s:
            sealed = s.get(TenantPolicy, world.tenant_id).webhook_secret_encrypted  # type: ignore[union-attr]
        assert Fernet(key_file.read_bytes().strip()).decrypt(sealed.encode()).decode() == secret  # type: ignore[union-attr]
    else:
        with pytest.raises(Exception) as info:
            svc.policies.set(world.admin, world.tenant_id, webhook_url=PUBLIC + "/hooks")
        assert getattr(info.value, "code", None) == "encryption_key_required"
        assert "KBAI_ENCRYPTION_KEY" in str(info.value)
        policy = svc.policies.get(world.tenant_id)
        assert policy.webhook_url is None and policy.updated_at is None  # nothing was stored
    svc.close()

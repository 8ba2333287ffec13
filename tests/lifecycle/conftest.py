"""Lifecycle fixtures: a real SMTP server (aiosmtpd) and a real webhook receiver, both in-process, and
services/app clients whose settings point at that SMTP server and let webhooks reach the receiver on
127.0.0.1 (the operator's KBAI_WEBHOOK_ALLOWED_NETWORKS: by default loopback is refused)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, free_port


@dataclass
class Mailbox:
    """What the SMTP server received. ``refuse`` makes it answer 554 to every message (a failed send);
    ``delay`` makes each message take that long (widens the window in which two workers race)."""

    messages: list[EmailMessage] = field(default_factory=list)
    refuse: bool = False
    delay: float = 0.0
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.refuse:
            return "554 Transaction failed (refused by the test)"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]

    def subjects(self, address: str | None = None) -> list[str]:
        with self.lock:
            return [subject(m) for m in self.messages if address is None or m["To"] == address]


def subject(message: EmailMessage) -> str:
    """The Subject as sent (a long one comes back folded, with a leading space)."""
    return " ".join(str(message["Subject"]).split())


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(port=free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


LOCAL_RECEIVERS = "127.0.0.1/32"


@pytest.fixture
def settings(database_url: str, mailbox: Mailbox) -> Settings:
    return Settings(
        database_url=database_url,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_from="kbai@acme.test",
        webhook_allowed_networks=LOCAL_RECEIVERS,
        **FAST_ARGON2,
    )


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False)) as c:
        yield c


def login(client: TestClient, email_address: str, password: str) -> str:
    r = client.post("/api/v1/session", json={"email": email_address, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """An HTTP endpoint that records every POST; ``status`` is what it answers."""

    url: str
    events: list[Received]
    status: int = 200


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    events: list[Received] = []
    receiver = WebhookReceiver("", events)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if receiver.status == 200:
                events.append(Received({k: v for k, v in self.headers.items()}, body))
            self.send_response(receiver.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/kbai"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Trickler:
    """A real TCP server that, once it has read a request (or, with ``greet``, at once), answers one byte every
    ``interval`` seconds and never finishes: the slow receiver of issue 13, finding 3. It stops when the client
    hangs up (``closed_by_peer``) or after ``cap`` seconds (``hit_cap``: the client never gave up)."""

    port: int = 0
    interval: float = 0.5
    cap: float = 90.0
    greet: bytes | None = None  # SMTP: trickle a banner instead of waiting for a request
    connected: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    closed_by_peer: bool = False
    hit_cap: bool = False
    sent: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/slow"


def _trickle(server: socket.socket, t: Trickler) -> None:
    try:
        conn, _ = server.accept()
    except OSError:
        return
    with conn:
        if t.greet is None:
            data = b""
            conn.settimeout(30)
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            head = b"HTTP/1.1 200 OK\r\nX-Slow: "
        else:
            head = t.greet
        t.connected.set()
        started = time.monotonic()
        for byte in [head[i : i + 1] for i in range(len(head))] + [b"a"] * 100_000:
            if time.monotonic() - started > t.cap:
                t.hit_cap = True
                break
            try:
                conn.settimeout(t.interval)
                try:
                    if conn.recv(1) == b"":
                        t.closed_by_peer = True
                        break
                except TimeoutError:
                    pass
                conn.sendall(byte)
                t.sent += 1
            except OSError:
                t.closed_by_peer = True
                break
    t.finished.set()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    t = Trickler()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    t.port = server.getsockname()[1]
    thread = threading.Thread(target=_trickle, args=(server, t), daemon=True)
    thread.start()
    try:
        yield t
    finally:
        server.close()

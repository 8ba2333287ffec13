"""Email over SMTP (stdlib ``smtplib``): expiry reminders and the notifications that also go by email.

Configured by ``KBAI_SMTP_*``; without ``KBAI_SMTP_HOST`` there is no :class:`Mailer` and nothing is
emailed (in-app notifications still are kept). Messages are plain text. Nothing token-shaped is
ever put in one: every subject and body passes through ``redact`` first. Messages leave through the
outbox (:mod:`kbai.delivery.outbox`), never from inside a database transaction.

One SMTP conversation has a hard deadline (``KBAI_OUTBOUND_DEADLINE_SECONDS``): ``smtplib``'s timeout
is per socket operation, so a server answering one byte every few seconds would never trip it; a
timer shuts the socket down when the deadline passes, which ends whatever read or write is waiting.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import threading
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from kbai.config import Settings
from kbai.tokenformat import redact

DEFAULT_DEADLINE_SECONDS = 10.0


class DeadlineExceeded(OSError):
    """The SMTP conversation did not finish before its deadline."""


class _SMTP(smtplib.SMTP):
    """smtplib's client, told when its deadline passed while it was still connecting."""

    def __init__(self, timeout: float, expired: threading.Event) -> None:
        self.expired = expired
        super().__init__(timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]  # private, so not in typeshed
        if self.expired.is_set():  # the timer fired before there was a socket to shut down
            sock.close()
            raise DeadlineExceeded("connecting took the whole deadline")
        return sock  # type: ignore[no-any-return]  # (the same)


class Mailer:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.deadline_seconds = deadline_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer | None:
        if not settings.smtp_host:
            return None
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            deadline_seconds=settings.outbound_deadline_seconds,
        )

    @property
    def domain(self) -> str | None:
        return self.sender.rpartition("@")[2].strip("> ") or None

    def send(self, to: str, subject: str, body: str, *, message_id: str | None = None) -> None:
        """Send one message within the deadline; raises (``smtplib.SMTPException`` or ``OSError``, of which
        :class:`DeadlineExceeded`) when the server refuses it or is too slow. ``message_id``: a stable
        ``Message-ID`` (the outbox event id), so a resent message is recognisably the same one."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = redact(" ".join(subject.split()))[:200]
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = message_id or make_msgid(domain=self.domain)
        message.set_content(redact(body))
        expired = threading.Event()
        smtp = _SMTP(self.deadline_seconds, expired)

        def cut() -> None:
            expired.set()
            sock = smtp.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self.deadline_seconds, cut)
        timer.daemon = True
        timer.start()
        try:
            smtp.connect(self.host, self.port)
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            if expired.is_set():
                raise DeadlineExceeded(f"no answer within the {self.deadline_seconds:g} s deadline") from None
            raise
        finally:
            timer.cancel()
            smtp.close()

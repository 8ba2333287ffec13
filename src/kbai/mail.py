"""Email over SMTP (stdlib ``smtplib``): expiry reminders and the notifications that also go by email.

Configured by ``KBAI_SMTP_*``; without ``KBAI_SMTP_HOST`` there is no :class:`Mailer` and nothing is
emailed (in-app notifications still are kept). Messages are plain text. Nothing token-shaped is
ever put in one: every subject and body passes through ``redact`` first.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from kbai.config import Settings
from kbai.notifications import NotificationView
from kbai.tokens.format import redact

log = logging.getLogger("kbai.mail")
TIMEOUT_SECONDS = 10


class Mailer:
    def __init__(self, host: str, port: int, sender: str, *, username: str | None = None,
                 password: str | None = None, starttls: bool = False) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer | None:
        if not settings.smtp_host:
            return None
        return cls(settings.smtp_host, settings.smtp_port, settings.smtp_from, username=settings.smtp_username,
                   password=settings.smtp_password, starttls=settings.smtp_starttls)

    def send(self, to: str, subject: str, body: str) -> None:
        """Send one message; raises (``smtplib.SMTPException`` or ``OSError``) when the server refuses it."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = redact(" ".join(subject.split()))[:200]
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2].strip("> ") or None)
        message.set_content(redact(body))
        with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_SECONDS) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)

    def notify(self, views: Sequence[NotificationView]) -> None:
        """A :class:`~kbai.notifications.Notifications` sender: email each new notification to its user."""
        for view in views:
            if not view.email:
                continue
            try:
                link = view.details.get("link") or "/system-settings/api-keys"
                self.send(view.email, view.title, f"{view.body}\n\nSee it in kbai: System Settings → API Keys ({link}).\n")
            except (smtplib.SMTPException, OSError) as exc:
                log.error("email to user %d failed: %s", view.user_id, redact(str(exc))[:300])

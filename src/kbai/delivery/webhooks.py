"""Signed webhook events: a tenant's endpoint hears about its tokens (e.g. expiry reminders).

Events are signed per the Standard Webhooks specification (https://www.standardwebhooks.com/),
with the ``standardwebhooks`` package::

    webhook-id: <the event's id: the same on every attempt, so receivers deduplicate on it>
    webhook-timestamp: <Unix time in seconds of this attempt>
    webhook-signature: v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + raw body)>

The key is the base64 part of the tenant's ``whsec_...`` secret, decoded. The older headers are
still sent, deprecated, for one release (0.2; removed in 0.3)::

    X-Kbai-Event: token.expiry_reminder
    X-Kbai-Delivery: <the event's id>
    X-Kbai-Timestamp: <Unix time in seconds of this attempt>
    X-Kbai-Signature: sha256=<hex HMAC-SHA256(secret as UTF-8, timestamp + "." + raw body)>

Secrets made before 0.2 look like ``kbai_whsec_<64 hex>``; they keep working for both schemes:
their Standard Webhooks key is the secret's own bytes, i.e. their ``whsec_`` form is
:func:`standard_secret` of them. docs/webhooks.md shows how to verify. Every POST goes through
:mod:`kbai.egress` (SSRF guard, hard deadline, no redirects).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import httpcore
from standardwebhooks import Webhook as StandardWebhook

from kbai import __version__, egress
from kbai.clock import Clock, iso
from kbai.compare import same_secret

SIGNATURE_HEADER = "X-Kbai-Signature"
TIMESTAMP_HEADER = "X-Kbai-Timestamp"
SECRET_PREFIX = "whsec_"
LEGACY_SECRET_PREFIX = "kbai_whsec_"
SECRET_BYTES = 32

# httpx and httpcore would log request lines (with the URL) at INFO and DEBUG; a tenant's webhook URL is
# theirs to know. Only their warnings get through.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class WebhookFailed(Exception):
    """The endpoint could not be reached, was refused, or did not answer 2xx. The message names no URL."""


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks format: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature for ``secret``."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            pass
    return secret.encode()  # a kbai_whsec_ secret of kbai 0.1: its own bytes


def standard_secret(secret: str) -> str:
    """``secret`` as a Standard Webhooks library expects it (``whsec_`` + base64 of the key)."""
    return SECRET_PREFIX + base64.b64encode(signing_key(secret)).decode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The deprecated ``X-Kbai-Signature`` value for ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: dict[str, str], body: bytes, now: datetime, tolerance_seconds: int = 300) -> bool:
    """What a receiver of the deprecated headers does (also used by our tests): signature and timestamp age."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lowered.get(TIMESTAMP_HEADER.lower(), ""))
    except ValueError:
        return False
    if abs(now.timestamp() - timestamp) > tolerance_seconds:
        return False
    return same_secret(lowered.get(SIGNATURE_HEADER.lower(), ""), signature(secret, timestamp, body))


def event_body(event_id: str, event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    """The JSON of one event: the same bytes on every attempt."""
    return json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "timestamp": iso(created_at),
            "created_at": int(created_at.timestamp()),
            "data": data,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def signed_headers(secret: str, event_id: str, event_type: str, body: bytes, at: datetime) -> list[tuple[str, str]]:
    """Every header of one attempt at ``at``: Standard Webhooks', then the deprecated ``X-Kbai-*`` ones."""
    timestamp = int(at.timestamp())
    standard = StandardWebhook(signing_key(secret)).sign(
        msg_id=event_id, timestamp=datetime.fromtimestamp(timestamp, UTC), data=body.decode()
    )
    return [
        ("Content-Type", "application/json"),
        ("User-Agent", f"kbai-webhooks/{__version__}"),
        ("webhook-id", event_id),
        ("webhook-timestamp", str(timestamp)),
        ("webhook-signature", standard),
        ("X-Kbai-Event", event_type),
        ("X-Kbai-Delivery", event_id),
        (TIMESTAMP_HEADER, str(timestamp)),
        (SIGNATURE_HEADER, signature(secret, timestamp, body)),
    ]


class Webhooks:
    def __init__(self, clock: Clock, guard: egress.Guard, deadline_seconds: float) -> None:
        self.clock = clock
        self.guard = guard
        self.deadline_seconds = deadline_seconds

    def post(
        self, url: str, secret: str, event_type: str, data: dict[str, Any], *, event_id: str, created_at: datetime
    ) -> None:
        """POST one signed event; raises :class:`WebhookFailed` unless the endpoint answers 2xx in time."""
        body = event_body(event_id, event_type, created_at, data)
        headers = signed_headers(secret, event_id, event_type, body, self.clock.now())
        try:
            status = egress.post(url, headers, body, guard=self.guard, deadline_seconds=self.deadline_seconds)
        except egress.Refused as exc:
            raise WebhookFailed(f"refused: {exc.reason}") from None
        except egress.Unresolvable:
            raise WebhookFailed("its host does not resolve") from None
        except egress.DeadlineExceeded:
            raise WebhookFailed(f"no answer within the {self.deadline_seconds:g} s deadline") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
            raise WebhookFailed(type(exc).__name__) from None
        if not 200 <= status < 300:
            raise WebhookFailed(f"answered {status}")

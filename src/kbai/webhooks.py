"""Signed webhook events: a tenant's endpoint hears about its tokens (e.g. expiry reminders).

Each event is a JSON object POSTed with::

    X-Kbai-Event: token.expiry_reminder
    X-Kbai-Delivery: <unique id of this event; a retry of the same event keeps it>
    X-Kbai-Timestamp: <Unix time in seconds when it was signed>
    X-Kbai-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

The timestamp is part of the signed bytes, so a receiver that also refuses timestamps older than a
few minutes cannot be fooled by a replayed request. docs/webhooks.md shows how to verify.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import datetime
from typing import Any

import httpx

from kbai import __version__
from kbai.clock import Clock
from kbai.compare import same_secret

TIMEOUT_SECONDS = 10
SIGNATURE_HEADER = "X-Kbai-Signature"
TIMESTAMP_HEADER = "X-Kbai-Timestamp"


class WebhookFailed(Exception):
    """The endpoint could not be reached or did not answer 2xx; the event will be tried again."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Kbai-Signature`` value for ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: dict[str, str], body: bytes, now: datetime, tolerance_seconds: int = 300) -> bool:
    """What a receiver does (also used by our tests): check the signature and the timestamp's age."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lowered.get(TIMESTAMP_HEADER.lower(), ""))
    except ValueError:
        return False
    if abs(now.timestamp() - timestamp) > tolerance_seconds:
        return False
    return same_secret(lowered.get(SIGNATURE_HEADER.lower(), ""), signature(secret, timestamp, body))


class Webhooks:
    def __init__(self, clock: Clock, transport: httpx.BaseTransport | None = None) -> None:
        self.clock = clock
        self.transport = transport

    def post(self, url: str, secret: str, event_type: str, data: dict[str, Any], *, delivery: str | None = None) -> None:
        """POST one signed event; raises :class:`WebhookFailed` unless the endpoint answers 2xx."""
        now = self.clock.now()
        delivery = delivery or str(uuid.uuid4())
        body = json.dumps({"id": delivery, "type": event_type, "created_at": int(now.timestamp()), "data": data},
                          separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"kbai-webhooks/{__version__}",
            "X-Kbai-Event": event_type,
            "X-Kbai-Delivery": delivery,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(secret, timestamp, body),
        }
        try:
            with httpx.Client(timeout=TIMEOUT_SECONDS, transport=self.transport, follow_redirects=False) as client:
                response = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise WebhookFailed(f"{type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise WebhookFailed(f"answered {response.status_code}")

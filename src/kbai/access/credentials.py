"""Service credentials: a client id and secret an operator issues to a resource server for introspection."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from kbai import audit, errors
from kbai.audit import Actor
from kbai.clock import Clock, utc_seconds
from kbai.errors import KbaiError
from kbai.store import Database
from kbai.store.models import ServiceCredential
from kbai.validate import clean_name


@dataclass(frozen=True)
class Credential:
    id: int
    name: str
    client_id: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


class CredentialService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def create(self, actor: Actor, name: str) -> tuple[Credential, str]:
        """A new credential; returns it with its secret, which is never shown again."""
        name = clean_name(name, "credential name")
        client_id = "kbai_sc_" + secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            if s.scalar(select(ServiceCredential.id).where(ServiceCredential.name == name)) is not None:
                raise KbaiError(errors.ALREADY_EXISTS, what=f"A service credential named '{name}'")
            row = ServiceCredential(name=name, client_id=client_id, secret_digest=_digest(secret), created_at=now)
            s.add(row)
            s.flush()
            audit.record(s, actor, "service_credential.create", at=now, target_type="service_credential",
                         target_id=row.id, details={"name": name, "client_id": client_id})
            return Credential(row.id, name, client_id), secret

    def authenticate(self, client_id: str, secret: str) -> Credential | None:
        if not client_id or not secret or len(client_id) > 64 or len(secret) > 200 or "\x00" in client_id:
            return None  # (NUL: PostgreSQL would refuse the lookup itself, a 422 instead of invalid_client)
        with self.db.read() as s:
            row = s.scalar(select(ServiceCredential).where(ServiceCredential.client_id == client_id))
        expected = row.secret_digest if row is not None else _digest("no such credential")
        ok = hmac.compare_digest(expected, _digest(secret))
        if row is None or not ok or row.revoked_at is not None:
            return None
        return Credential(row.id, row.name, row.client_id)

"""Idempotency keys: the rules of remembering a create's first answer for 24 h (no HTTP in here).

A key belongs to one caller (``principal``) and one operation (``route``). The first request with it
*claims* the key in a transaction of its own, then runs, then stores its answer; a retry with the same
fingerprint gets that answer back, one with another fingerprint is refused (422), and one that
arrives while the first is still running is refused with 409 ``idempotency_in_progress`` (as Stripe
does) rather than waiting, so no request ever holds a database lock for another.

Ordering, and what a crash can leave: the claim commits before the create, the answer after it, so
the create and its record are not one transaction. A process that dies between the two leaves a
claim without an answer. Within :data:`CLAIM_LEASE` a retry is told "in progress"; after it the retry
takes the claim over and runs again, and every create it guards refuses a duplicate by its own rule
(a token's name among active tokens, a rotated token's successor, a role's name, a user's email), so
a retry after a crash gets that 409, never a second token. Answers other than success are not kept:
nothing was created, so the key is released and a corrected retry may use it again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from kbai import errors
from kbai.clock import Clock, utc_seconds
from kbai.errors import KbaiError
from kbai.store import Database
from kbai.store.models import IdempotencyRecord

KEEP_FOR = timedelta(hours=24)
# How long a claim without an answer counts as "still running". Longer than any request can take
# (the database waits at most 30 s for a lock), short enough that a retry after a crash is not stuck.
CLAIM_LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class Claim:
    """This request holds the key: run the operation, then :meth:`IdempotencyStore.finish` or ``release``."""

    record_id: int
    claim: str


@dataclass(frozen=True)
class Replay:
    """The key was used before with the same request: answer this again."""

    status: int
    body: Any


class IdempotencyStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def begin(self, principal: str, route: str, key: str, fingerprint: str) -> Claim | Replay:
        """Claim ``key`` for this request, or say what the earlier request with it answered.

        Raises 422 ``idempotency_key_reused`` for another fingerprint and 409 ``idempotency_in_progress``
        while the request holding the claim is still running.
        """
        for _ in range(2):
            try:
                return self._begin(principal, route, key, fingerprint)
            except IntegrityError:
                # Another request inserted the same key between our look-up and our insert (PostgreSQL;
                # SQLite's write lock rules that out): look again, it is now in progress or answered.
                continue
        raise KbaiError(errors.IDEMPOTENCY_IN_PROGRESS)

    def _begin(self, principal: str, route: str, key: str, fingerprint: str) -> Claim | Replay:
        now = utc_seconds(self.clock.now())
        with self.db.write() as s:
            row = s.scalar(
                select(IdempotencyRecord)
                .where(
                    IdempotencyRecord.principal == principal,
                    IdempotencyRecord.route == route,
                    IdempotencyRecord.key == key,
                )
                .with_for_update()
            )
            if row is not None and row.expires_at <= now:
                s.delete(row)  # kept 24 h: after that the key is new again
                s.flush()
                row = None
            if row is None:
                row = IdempotencyRecord(
                    principal=principal,
                    route=route,
                    key=key,
                    fingerprint=fingerprint,
                    claim=secrets.token_hex(16),
                    claimed_at=now,
                    status=None,
                    body=None,
                    created_at=now,
                    expires_at=now + KEEP_FOR,
                )
                s.add(row)
                s.flush()
                return Claim(row.id, row.claim)
            if row.fingerprint != fingerprint:
                raise KbaiError(errors.IDEMPOTENCY_KEY_REUSED)
            if row.status is not None:
                return Replay(row.status, row.body)
            if row.claimed_at + CLAIM_LEASE > now:
                raise KbaiError(errors.IDEMPOTENCY_IN_PROGRESS)
            # The request that claimed it died without an answer (see the module docstring): take over.
            row.claim = secrets.token_hex(16)
            row.claimed_at = now
            return Claim(row.id, row.claim)

    def finish(self, claim: Claim, status: int, body: Any) -> None:
        """Remember the answer (``body`` must already be free of secrets). A claim taken over meanwhile is
        left to the request that took it."""
        with self.db.write() as s:
            s.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.id == claim.record_id, IdempotencyRecord.claim == claim.claim)
                .values(status=status, body=body)
            )

    def release(self, claim: Claim) -> None:
        """Forget the key: the request failed, so nothing was created and a retry may run again."""
        with self.db.write() as s:
            s.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.id == claim.record_id,
                    IdempotencyRecord.claim == claim.claim,
                    IdempotencyRecord.status.is_(None),
                )
            )

    def prune(self, now: datetime | None = None) -> int:
        """Delete every key older than 24 h (``kbai worker`` does it each pass; look-ups ignore them anyway)."""
        when = utc_seconds(now or self.clock.now())
        with self.db.write() as s:
            result = s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= when))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DELETE gives a CursorResult

"""``kbai worker``: the background jobs of the token lifecycle, run apart from the web servers.

Each pass sends the expiry reminders that are due (:mod:`kbai.tokens.reminders`), applies every
tenant's auto-revoke policy (:mod:`kbai.tokens.hygiene`) and forgets idempotency keys older than 24 h
(:mod:`kbai.idempotency`; look-ups ignore them anyway, this only keeps the table small). Both are safe with any number of workers
at once and across restarts (each reminder and each revocation happens exactly once), so run one
worker per deployment, or a few for availability, or ``kbai worker --once`` from cron.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from kbai.idempotency import IdempotencyStore
from kbai.tokens.hygiene import AutoRevoke
from kbai.tokens.reminders import Reminders

log = logging.getLogger("kbai.worker")


@dataclass(frozen=True)
class PassResult:
    reminders_sent: int
    reminders_failed: int
    auto_revoked: int
    idempotency_keys_pruned: int = 0


class Worker:
    def __init__(self, reminders: Reminders, auto_revoke: AutoRevoke,
                 idempotency: IdempotencyStore | None = None) -> None:
        self.reminders = reminders
        self.auto_revoke = auto_revoke
        self.idempotency = idempotency

    def run_once(self) -> PassResult:
        run = self.reminders.send_due()
        try:
            revoked = len(self.auto_revoke.run())
        except Exception as exc:  # noqa: BLE001 - logged; the next pass tries again
            log.error("auto-revoke pass failed: %s", type(exc).__name__)
            revoked = 0
        pruned = 0
        if self.idempotency is not None:
            try:
                pruned = self.idempotency.prune()
            except Exception as exc:  # noqa: BLE001 - logged; the next pass tries again
                log.error("idempotency key pruning failed: %s", type(exc).__name__)
        result = PassResult(len(run.sent), len(run.failed), revoked, pruned)
        log.info("worker pass: %d reminder(s) sent, %d failed, %d token(s) auto-revoked",
                 result.reminders_sent, result.reminders_failed, result.auto_revoked)
        return result

    def run_forever(self, interval_seconds: float, stop: threading.Event) -> None:
        """A pass every ``interval_seconds`` until ``stop`` is set (SIGTERM/SIGINT in ``kbai worker``)."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - e.g. the database is briefly unreachable
                log.error("worker pass failed: %s", type(exc).__name__)
            stop.wait(interval_seconds)

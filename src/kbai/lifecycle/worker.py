"""``kbai worker``: the background jobs of the token lifecycle, run apart from the web servers.

Each pass claims the expiry reminders that are due (:mod:`kbai.lifecycle.reminders`), applies every
tenant's auto-revoke policy (:mod:`kbai.lifecycle.hygiene`), sends what they queued plus whatever
else the outbox holds that is due (retries; :mod:`kbai.delivery.outbox`), and forgets idempotency keys older
than 24 h (:mod:`kbai.store.idempotency`; look-ups ignore them anyway, this only keeps the table small).
All of it is safe with any number of workers at once and across restarts (each reminder and each
revocation happens exactly once, each email and webhook event is delivered at least once under a
stable id), so run one worker per deployment, or a few for availability, or ``kbai worker --once``
from cron.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from kbai.delivery.outbox import Outbox
from kbai.lifecycle.hygiene import AutoRevoke
from kbai.lifecycle.reminders import Reminders
from kbai.store.idempotency import IdempotencyStore

log = logging.getLogger("kbai.worker")


@dataclass(frozen=True)
class PassResult:
    reminders_sent: int
    reminders_failed: int
    auto_revoked: int
    deliveries_sent: int = 0
    deliveries_failed: int = 0
    idempotency_keys_pruned: int = 0


class Worker:
    def __init__(
        self,
        reminders: Reminders,
        auto_revoke: AutoRevoke,
        outbox: Outbox | None = None,
        idempotency: IdempotencyStore | None = None,
    ) -> None:
        self.reminders = reminders
        self.auto_revoke = auto_revoke
        self.outbox = outbox or reminders.outbox
        self.idempotency = idempotency

    def run_once(self) -> PassResult:
        before = self.outbox.totals()
        run = self.reminders.send_due()
        try:
            revoked = len(self.auto_revoke.run())
        except Exception as exc:  # noqa: BLE001 - logged; the next pass tries again
            log.error("auto-revoke pass failed: %s", type(exc).__name__)
            revoked = 0
        try:
            while self.outbox.dispatch().sent:
                pass  # another batch may be due
            self.outbox.prune()
        except Exception as exc:  # noqa: BLE001 - logged; the rows stay due for the next pass
            log.error("outbox pass failed: %s", type(exc).__name__)
        pruned = 0
        if self.idempotency is not None:
            try:
                pruned = self.idempotency.prune()
            except Exception as exc:  # noqa: BLE001 - logged; the next pass tries again
                log.error("idempotency key pruning failed: %s", type(exc).__name__)
        after = self.outbox.totals()
        result = PassResult(
            len(run.sent), len(run.failed), revoked, after.sent - before.sent, after.failed - before.failed, pruned
        )
        log.info(
            "worker pass: %d reminder(s) queued, %d failed, %d token(s) auto-revoked, "
            "%d message(s) delivered, %d delivery failure(s), %d idempotency key(s) forgotten",
            result.reminders_sent,
            result.reminders_failed,
            result.auto_revoked,
            result.deliveries_sent,
            result.deliveries_failed,
            result.idempotency_keys_pruned,
        )
        return result

    def run_forever(self, interval_seconds: float, stop: threading.Event) -> None:
        """A pass every ``interval_seconds`` until ``stop`` is set (SIGTERM/SIGINT in ``kbai worker``)."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - e.g. the database is briefly unreachable
                log.error("worker pass failed: %s", type(exc).__name__)
            stop.wait(interval_seconds)

"""A token's own rate limit and quota, counted in process and shared through the database in the background.

The request path never waits for the network on a warm request. Each instance holds a small *share* of a
token's budget, taken ahead of need from the database (at most 5 % of the rate, or of the quota, per
share): a request spends one unit of the share in memory. When a share is half spent the next one is taken
on a background thread, so a steady stream of requests finds one ready. Only when a share is spent before
the next arrived (a burst, or the first request of a rate window) does that one request take a share itself
(one short write transaction), on a worker thread, never on the event loop.

Shares are reservations, never estimates, so several instances together never serve more than the limit:
at most the unspent shares held by other instances go unused (under 5 % per instance) when a window ends
or the quota runs out. ``X-Kbai-Quota-Remaining`` is what the database has left plus this instance's
unspent share: exact on one instance. A graceful stop gives unspent quota back.

- Rate limit: fixed UTC windows (the second, minute or hour); ``token_rate_windows`` holds what was granted
  in each window, so every instance shares one count. Over it: 429 ``rate_limited`` with ``Retry-After``
  (the end of the window).
- Quota: ``tokens.quota_remaining`` is what no instance has taken yet. With a refill it is set back to the
  refill amount at the first share taken in a new period (UTC day, or month). Spent: 429
  ``quota_exhausted``, with ``Retry-After`` when a refill is due. Below 10 % of the period's amount the
  owner is told once per period (in-app, and email when SMTP is set) and the tenant's webhook gets a
  ``token.quota_low`` event.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kbai import errors
from kbai.clock import Clock, human, iso, utc_seconds
from kbai.delivery.notifications import NewNotification, Notifications
from kbai.delivery.outbox import Outbox
from kbai.errors import KbaiError
from kbai.store import Database
from kbai.store.models import Person, Token, TokenRateWindow, User
from kbai.tokens.policy import webhook_of
from kbai.tokens.restrictions import next_refill, period_start
from kbai.tokens.verify import TokenRecord

log = logging.getLogger("kbai.tokens")
SHARE = 0.05  # the most of a budget one share takes
LOW = 0.10  # the alert threshold
QUOTA_LOW = "token.quota_low"
_MAX_STATES = 100_000
_PRUNE_EVERY = 500  # rate-window rows older than a day are deleted every this many shares taken


def share_of(amount: int) -> int:
    return max(1, int(amount * SHARE))


@dataclass(frozen=True)
class Admission:
    """A use counted (``error`` None; ``quota_remaining`` what is left after it), or refused."""

    error: KbaiError | None = None
    quota_remaining: int | None = None


_ADMITTED = Admission()


@dataclass
class _RateState:
    requests: int
    seconds: int
    window: int  # epoch seconds of the window's start
    left: int = 0  # unspent units of this instance's share
    spent: bool = False  # the window's budget is all granted: nothing more until it ends
    fetching: bool = False


@dataclass
class _QuotaState:
    version: int
    left: int = 0
    stored: int | None = None  # what the database had left after the last share (None: not read yet)
    total: int = 0
    spent: bool = False
    until: datetime | None = None  # with spent: the next refill (None: no refill comes)
    fetching: bool = False


class TokenLimits:
    def __init__(self, db: Database, clock: Clock, notifications: Notifications, outbox: Outbox) -> None:
        self.db = db
        self.clock = clock
        self.notifications = notifications
        self.outbox = outbox
        self._rates: dict[int, _RateState] = {}
        self._quotas: dict[int, _QuotaState] = {}
        self._lock = threading.Lock()
        self._fetched = threading.Condition(self._lock)  # notified when a background share has landed
        self._pool: ThreadPoolExecutor | None = None
        self._taken = 0
        self.shares_taken = 0  # (for the benchmark and tests) shares taken from the database by this process

    # ---- the request path -------------------------------------------------------------------
    def admit(self, record: TokenRecord, *, warm_only: bool = False) -> Admission | None:
        """Count one use of ``record``'s token against its rate limit and quota. None (only with ``warm_only``)
        when that needs the database: call again off the event loop."""
        if not record.limited:
            return _ADMITTED
        now = self.clock.now()
        # Each pass spends a unit, waits for a share another thread is taking, or takes one itself; a share
        # that comes back empty marks the budget spent, so the next pass decides.
        for _attempt in range(50):
            refused_or_io = self._spend(record, now)
            if not isinstance(refused_or_io, str):
                return refused_or_io
            if warm_only:
                return None
            # One share of a token at a time per instance (they then land in the database's order, which keeps
            # the remaining figure exact); a share on its way is waited for, never taken twice or missed.
            state = self._claim(refused_or_io, record.token_id)
            if state is None:
                continue
            try:
                if refused_or_io == "rate":
                    self._take_rate(record, now)
                elif not self._take_quota(record, now):
                    # The quota was set anew or removed since this record was read: the invalidation that
                    # brings the new setting is on its way (at once on this instance); never refuse on the old.
                    return _ADMITTED
            finally:
                with self._fetched:
                    state.fetching = False
                    self._fetched.notify_all()
        return self._spend_or_refuse(record, now)

    def _claim(self, kind: str, token_id: int) -> _RateState | _QuotaState | None:
        """Claim the taking of ``kind``'s next share of ``token_id`` (the state, marked fetching); None after
        waiting (off the event loop) for a share another thread was taking."""
        with self._fetched:
            state = (self._rates if kind == "rate" else self._quotas).get(token_id)
            if state is None:
                return None
            if state.fetching:
                self._fetched.wait_for(lambda: not state.fetching, timeout=10)
                return None
            state.fetching = True
            return state

    def _spend_or_refuse(self, record: TokenRecord, now: datetime) -> Admission:
        """After three shares taken in a row came back empty-handed (other instances spend as fast): refuse."""
        found = self._spend(record, now)
        if isinstance(found, Admission):
            return found
        if found == "rate" and record.rate_limit is not None:
            return Admission(KbaiError(errors.TOKEN_RATE_LIMITED, limit=record.rate_limit.text(), retry_after=1))
        return Admission(KbaiError(errors.QUOTA_EXHAUSTED, until=""))

    def _spend(self, record: TokenRecord, now: datetime) -> Admission | str:
        """Spend one unit in memory: an Admission, or "rate" / "quota" for the share that must be taken first."""
        token_id = record.token_id
        later: list[tuple[str, _RateState | _QuotaState]] = []
        with self._lock:
            rate = None
            if record.rate_limit is not None:
                limit = record.rate_limit
                window = int(now.timestamp()) // limit.seconds * limit.seconds
                rate = self._rates.get(token_id)
                if (
                    rate is None
                    or rate.window != window
                    or (rate.requests, rate.seconds)
                    != (
                        limit.requests,
                        limit.seconds,
                    )
                ):
                    if len(self._rates) >= _MAX_STATES:
                        self._rates.clear()
                    rate = self._rates[token_id] = _RateState(limit.requests, limit.seconds, window)
                if rate.left <= 0:
                    if rate.spent and not rate.fetching:
                        wait = max(1, math.ceil(rate.window + rate.seconds - now.timestamp()))
                        return Admission(KbaiError(errors.TOKEN_RATE_LIMITED, limit=limit.text(), retry_after=wait))
                    return "rate"
            quota = None
            if record.quota:
                quota = self._quotas.get(token_id)
                if quota is None or quota.version != record.quota_version:
                    if len(self._quotas) >= _MAX_STATES:
                        self._quotas.clear()
                    quota = self._quotas[token_id] = _QuotaState(record.quota_version)
                if quota.left <= 0:
                    if quota.spent and not quota.fetching and (quota.until is None or now < quota.until):
                        return Admission(_exhausted(quota.until, now))
                    return "quota"
            # Both have a unit: spend them together (a refusal by one never costs the other).
            if rate is not None:
                rate.left -= 1
                if rate.left <= share_of(rate.requests) // 2 and not rate.spent and not rate.fetching:
                    rate.fetching = True
                    later.append(("rate", rate))
            remaining = None
            if quota is not None:
                quota.left -= 1
                remaining = (quota.stored or 0) + quota.left
                if quota.left <= share_of(quota.total) // 2 and (quota.stored or 0) > 0 and not quota.fetching:
                    quota.fetching = True
                    later.append(("quota", quota))
        for kind, state in later:
            self._in_background(kind, record, state)
        return Admission(quota_remaining=remaining) if remaining is not None else _ADMITTED

    def unspent(self, token_id: int) -> int:
        """This instance's unspent quota share of a token (0 when none): added to the stored remainder it is
        what is left, exactly, on a single instance."""
        with self._lock:
            quota = self._quotas.get(token_id)
            return quota.left if quota is not None else 0

    # ---- shares, taken from the database ------------------------------------------------------
    def _in_background(self, kind: str, record: TokenRecord, state: _RateState | _QuotaState) -> None:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbai-limits")
        try:
            self._pool.submit(self._fetch, kind, record, state)
        except RuntimeError:  # stopping: the next request takes its share itself
            with self._fetched:
                state.fetching = False
                self._fetched.notify_all()

    def _fetch(self, kind: str, record: TokenRecord, state: _RateState | _QuotaState) -> None:
        try:
            if kind == "rate":
                self._take_rate(record, self.clock.now())
            else:
                self._take_quota(record, self.clock.now())
        except Exception as exc:  # noqa: BLE001 - the next request takes its share itself
            log.warning("taking a %s share for token %s failed: %s", kind, record.token_id, type(exc).__name__)
        finally:
            with self._fetched:
                state.fetching = False
                self._fetched.notify_all()

    def _take_rate(self, record: TokenRecord, now: datetime) -> None:
        limit = record.rate_limit
        assert limit is not None
        window = int(now.timestamp()) // limit.seconds * limit.seconds
        start = datetime.fromtimestamp(window, UTC)
        want = share_of(limit.requests)
        with self.db.write() as s:
            dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
            s.execute(
                dialect.insert(TokenRateWindow)
                .values(token_id=record.token_id, window_start=start, granted=0)
                .on_conflict_do_nothing(index_elements=["token_id", "window_start"])
            )
            granted_now = s.scalar(
                update(TokenRateWindow)
                .where(TokenRateWindow.token_id == record.token_id, TokenRateWindow.window_start == start)
                .values(granted=TokenRateWindow.granted + want)
                .returning(TokenRateWindow.granted)
                .execution_options(synchronize_session=False)
            )
            self._taken += 1
            if self._taken % _PRUNE_EVERY == 0:
                s.execute(
                    delete(TokenRateWindow).where(TokenRateWindow.window_start < utc_seconds(now) - timedelta(days=1))
                )
        total = int(granted_now or 0)
        got = max(0, min(want, limit.requests - (total - want)))
        self.shares_taken += 1
        with self._lock:
            rate = self._rates.get(record.token_id)
            if rate is None or rate.window != window:
                return  # the window ended meanwhile: the share is void
            rate.left += got
            if got < want:
                rate.spent = True

    def _take_quota(self, record: TokenRecord, now: datetime) -> bool:
        """Take a quota share; False when the stored quota is no longer the one ``record`` has."""
        at = utc_seconds(now)
        low_alert: list[object] = []
        with self.db.write() as s:
            token = s.execute(
                select(Token.quota_total, Token.quota_version, Token.quota_refill_interval).where(
                    Token.id == record.token_id
                )
            ).first()
            if token is None or token.quota_total is None or token.quota_version != record.quota_version:
                return False  # removed or set anew meanwhile: the next record brings the new setting
            interval = token.quota_refill_interval
            refilled = False
            if interval is not None:
                period = period_start(at, interval)
                refilled = (
                    s.execute(
                        update(Token)
                        .where(
                            Token.id == record.token_id,
                            Token.quota_version == record.quota_version,
                            (Token.quota_period_start.is_(None)) | (Token.quota_period_start < period),
                        )
                        .values(
                            quota_remaining=Token.quota_refill_amount,
                            quota_total=Token.quota_refill_amount,
                            quota_period_start=period,
                            quota_low_at=None,
                        )
                        .execution_options(synchronize_session=False)
                    ).rowcount  # type: ignore[attr-defined]  # a CursorResult: an UPDATE's
                    > 0
                )
            total = s.scalar(select(Token.quota_total).where(Token.id == record.token_id)) or 0
            want = share_of(total)
            left_after = s.scalar(
                update(Token)
                .where(Token.id == record.token_id, Token.quota_version == record.quota_version)
                .values(quota_remaining=Token.quota_remaining - want)
                .returning(Token.quota_remaining)
                .execution_options(synchronize_session=False)
            )
            left_after = int(left_after or 0)
            got = want if left_after >= 0 else max(0, want + left_after)
            if left_after < 0:
                s.execute(
                    update(Token)
                    .where(Token.id == record.token_id, Token.quota_remaining < 0)
                    .values(quota_remaining=0)
                    .execution_options(synchronize_session=False)
                )
                left_after = 0
            if left_after * 10 < total:  # below 10 %: tell once per period (the claim makes it once)
                low_alert = self._alert_low(s, record, at, left_after, total)
        self.shares_taken += 1
        if low_alert:
            views, outbox_ids = low_alert
            self.notifications.deliver(views)  # type: ignore[arg-type]
            self.outbox.after_commit(outbox_ids)  # type: ignore[arg-type]
        with self._lock:
            quota = self._quotas.get(record.token_id)
            if quota is None or quota.version != record.quota_version:
                return True
            quota.left += got
            # Shares taken at once land in any order: the lowest remainder seen is the current one, unless
            # this share came with a refill.
            quota.stored = left_after if refilled or quota.stored is None else min(quota.stored, left_after)
            quota.total = total
            if got == 0:
                quota.spent = True
                quota.until = next_refill(at, interval) if interval is not None else None
            else:
                quota.spent = False
        return True

    def _alert_low(self, s: Session, record: TokenRecord, at: datetime, left: int, total: int) -> list[object]:
        claimed = s.scalar(
            update(Token)
            .where(Token.id == record.token_id, Token.quota_low_at.is_(None))
            .values(quota_low_at=at)
            .returning(Token.id)
            .execution_options(synchronize_session=False)
        )
        if claimed is None:
            return []
        details = {
            "token_id": record.token_id,
            "prefix": record.prefix,
            "name": record.name,
            "quota_remaining": left,
            "quota_total": total,
            "service": record.service,
        }
        views = []
        if record.user_id is not None:
            email = s.scalar(
                select(Person.email).join(User, User.person_id == Person.id).where(User.id == record.user_id)
            )
            views = self.notifications.add(
                s,
                [
                    NewNotification(
                        user_id=record.user_id,
                        tenant_id=record.tenant_id,
                        email=email or record.email,
                        kind=QUOTA_LOW,
                        title=f"Token {record.prefix} ({record.name[:60]}) has used 90 % of its quota"[:200],
                        body=(
                            f"At {human(at)} token {record.prefix} had about {left:,} of {total:,} requests left. "
                            "When none are left its requests are refused (429 quota_exhausted) until the quota is "
                            "refilled. Raise it under System Settings → API Keys if it needs more."
                        ),
                        details=details,
                    )
                ],
                at,
            )
        outbox_ids = []
        if webhook_of(s, record.tenant_id) is not None:
            outbox_ids.append(
                self.outbox.add_webhook(
                    s,
                    event_id=f"quota-low-{record.token_id}-{record.quota_version}-{iso(at)}",
                    tenant_id=record.tenant_id,
                    event_type=QUOTA_LOW,
                    data={**details, "owner": record.email or None, "tenant_id": record.tenant_id},
                    at=at,
                )
            )
        return [views, outbox_ids]

    # ---- a graceful stop -----------------------------------------------------------------------
    def close(self) -> None:
        """Give unspent quota shares back, and stop the background thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            unspent = [(token_id, q.version, q.left) for token_id, q in self._quotas.items() if q.left > 0]
            self._quotas.clear()
            self._rates.clear()
        if not unspent:
            return
        try:
            with self.db.write() as s:
                for token_id, version, left in unspent:
                    s.execute(
                        update(Token)
                        .where(Token.id == token_id, Token.quota_version == version, Token.quota_remaining.is_not(None))
                        .values(quota_remaining=Token.quota_remaining + left)
                        .execution_options(synchronize_session=False)
                    )
        except Exception as exc:  # noqa: BLE001 - a stop must finish; the shares are then lost, never doubled
            log.warning("giving back unspent quota shares failed: %s", type(exc).__name__)


def _exhausted(until: datetime | None, now: datetime) -> KbaiError:
    if until is None:
        return KbaiError(errors.QUOTA_EXHAUSTED, until="")
    wait = max(1, math.ceil((until - now).total_seconds()))
    return KbaiError(errors.QUOTA_EXHAUSTED, until=f" until {human(until)}", retry_after=wait)

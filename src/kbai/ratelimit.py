"""Rate limits on failures (token authentication per IP; logins per address and per account, see
:class:`LoginThrottle`).

Backed by the ``limits`` library: in-process memory by default, Redis when KBAI_REDIS_URL is set
so every instance shares the same counters. When Redis cannot be reached the counters fall back to
this process's memory (limits still hold, per instance) and Redis is tried again a few seconds later:
a Redis outage must not turn every token check and login into a 500.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from limits import RateLimitItemPerMinute, storage, strategies
from limits.errors import StorageError

log = logging.getLogger("kbai.ratelimit")
T = TypeVar("T")
REDIS_RETRY_SECONDS = 5.0  # after a Redis failure, use local counters this long before trying Redis again


class FailureLimiter:
    def __init__(self, redis_url: str | None, prefix: str, auth_per_minute: int, login_per_minute: int) -> None:
        memory = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._remote: strategies.MovingWindowRateLimiter | None = None
        if redis_url:
            backend: storage.Storage = storage.storage_from_string(  # type: ignore[assignment]  # redis:// is sync
                redis_url,
                key_prefix=f"{prefix}:limits",
                wrap_exceptions=True,
                socket_connect_timeout=2,
                socket_timeout=2,
            )
            self._remote = strategies.MovingWindowRateLimiter(backend)
        else:
            backend = memory.storage
        self.storage = backend
        # In-process counters answer without I/O, so they may be consulted on an event loop.
        self.local = not redis_url
        self._memory = memory
        self._remote_down_until = 0.0
        self.auth = RateLimitItemPerMinute(auth_per_minute)
        self.login = RateLimitItemPerMinute(login_per_minute)

    def _use(self, action: Callable[[strategies.MovingWindowRateLimiter], T]) -> T:
        """``action`` on Redis when configured and reachable, else on this process's counters."""
        if self._remote is not None and time.monotonic() >= self._remote_down_until:
            try:
                return action(self._remote)
            except StorageError as exc:
                if self._remote_down_until == 0.0:  # once per outage, not once per request
                    log.warning(
                        "Redis unreachable for rate limits, counting in this process for now: %s", exc.storage_error
                    )
                self._remote_down_until = time.monotonic() + REDIS_RETRY_SECONDS
                return action(self._memory)
            self._remote_down_until = 0.0
        return action(self._memory)

    def blocked(self, item: RateLimitItemPerMinute, *keys: str) -> int:
        """Seconds to wait when ``keys`` have used up ``item``; 0 when free to try."""

        def wait(limiter: strategies.MovingWindowRateLimiter) -> int:
            if limiter.test(item, *keys):
                return 0
            reset_at, _remaining = limiter.get_window_stats(item, *keys)
            return max(1, math.ceil(reset_at - time.time()))

        return self._use(wait)

    def failed(self, item: RateLimitItemPerMinute, *keys: str) -> None:
        self._use(lambda limiter: limiter.hit(item, *keys))


# ---- logins -------------------------------------------------------------------------------------
FAMILIAR_SECONDS = 30 * 86400  # an address an account signed in from stays familiar this long
ACCOUNT_WINDOW_SECONDS = 86400


@dataclass(frozen=True)
class LoginRefused:
    """Not evaluated: ``why`` is ``address`` (this address failed too often) or ``account`` (the account
    is under attack and this address is not one it signs in from); try again in ``retry_after`` s."""

    why: Literal["address", "account"]
    retry_after: int


@dataclass(frozen=True)
class LoginReserved:
    """An attempt that may be evaluated: a failure keeps its place in the counters, anything else hands
    it to :meth:`LoginThrottle.give_back`."""

    account: str
    ip: str


def _expires_at(storage: Any, key: str) -> float:
    """When ``key`` expires, to the millisecond. ``limits``' Redis storage reads TTL, which Redis rounds to
    whole seconds, so a Retry-After built on it could end up to half a second early and a client that waited
    exactly that long would be refused again; PTTL is exact."""
    connection = getattr(storage, "get_connection", None)
    prefixed = getattr(storage, "prefixed_key", None)
    if connection is None or prefixed is None:
        return float(storage.get_expiry(key))
    return max(int(connection(True).pttl(prefixed(key))), 0) / 1000 + time.time()


class LoginThrottle:
    """Failed logins slow the attacker, never lock the owner out.

    * **Per address** (``KBAI_LOGIN_FAILURES_PER_MINUTE``): an address that fails too often is refused
      for the rest of the minute, whatever account it tries. Only that address.
    * **Per account** (``KBAI_LOGIN_ACCOUNT_FAILURES_PER_DAY``): past that many failures in a day, from
      any addresses, an address the account has not signed in from (in the last 30 days) gets one
      attempt per delay, and the delay doubles with each further failure (2 s, 4 s, ... up to
      ``KBAI_LOGIN_ACCOUNT_MAX_DELAY_SECONDS``). A botnet then guesses a few hundred passwords a day
      at most, while the owner, from an address they used before, logs in as usual.

    Every attempt is reserved before its password is checked (an atomic increment) and given back when
    it succeeds, so parallel requests can never be evaluated more often than the limits allow. Unknown
    emails count exactly like real ones: the throttle never tells which accounts exist. Accounts are
    kept as SHA-256 digests, so Redis holds no email address.
    """

    def __init__(self, limiter: FailureLimiter, account_per_day: int, max_delay_seconds: int) -> None:
        self.limiter = limiter
        # Fixed windows (a counter that can be given back), under their own names: the token limit's
        # moving windows are lists in Redis, and the two must never share a key.
        self.address = RateLimitItemPerMinute(limiter.login.amount, namespace="KBAI-LOGIN")
        self.account_per_day = account_per_day
        self.max_delay = max_delay_seconds

    @staticmethod
    def _keys(account: str, ip: str) -> tuple[str, str, str]:
        a = hashlib.sha256(account.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()[:32]
        f = hashlib.sha256(f"{a}|{ip}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"kbai-login/failures/{a}", f"kbai-login/gate/{a}", f"kbai-login/familiar/{f}"

    def reserve(self, account: str, ip: str) -> LoginReserved | LoginRefused:
        failures, gate, familiar = self._keys(account, ip)

        def take(limiter: strategies.MovingWindowRateLimiter) -> LoginReserved | LoginRefused:
            st = limiter.storage
            fixed = strategies.FixedWindowRateLimiter(st)
            if not fixed.hit(self.address, "login-ip", ip):
                reset_at, _ = fixed.get_window_stats(self.address, "login-ip", ip)
                return LoginRefused("address", max(1, math.ceil(reset_at - time.time())))
            n = st.incr(failures, ACCOUNT_WINDOW_SECONDS)
            over = n - self.account_per_day
            if over > 0 and not st.get(familiar):
                delay = min(2 ** min(over, 20), self.max_delay)
                if st.incr(gate, delay) > 1:  # another attempt holds this delay: this one is not evaluated
                    st.incr(failures, ACCOUNT_WINDOW_SECONDS, -1)
                    fixed.hit(self.address, "login-ip", ip, cost=-1)
                    return LoginRefused("account", max(1, math.ceil(_expires_at(st, gate) - time.time())))
            return LoginReserved(account, ip)

        return self._use_storage(take)

    def give_back(self, attempt: LoginReserved, *, signed_in: bool) -> None:
        """The attempt was no failure (the password was right, or the check itself broke down); with
        ``signed_in`` its address becomes familiar to the account for 30 days."""
        failures, _gate, familiar = self._keys(attempt.account, attempt.ip)

        def refund(limiter: strategies.MovingWindowRateLimiter) -> None:
            st = limiter.storage
            address = self.address.key_for("login-ip", attempt.ip)
            for key, window in ((address, self.address.get_expiry()), (failures, ACCOUNT_WINDOW_SECONDS)):
                if st.get(key) > 0:  # (a window that ended meanwhile has nothing to give back)
                    st.incr(key, window, -1)
            if signed_in:
                st.clear(familiar)  # restarts its 30 days
                st.incr(familiar, FAMILIAR_SECONDS)

        self._use_storage(refund)

    def _use_storage(self, action: Callable[[strategies.MovingWindowRateLimiter], T]) -> T:
        return self.limiter._use(action)  # the same Redis-or-memory choice as every limit


# ---- failed token authentications ----------------------------------------------------------------
# Kept apart from the login limits above: the token check is the hot path, and its rule differs. A token
# that verifies is always served, so a shared egress address (Zapier, n8n cloud) flooded with bad tokens
# never locks out the good ones; only failing attempts count and only failing attempts are refused.

BLOCK_MESSAGE = "block"  # "block <unix time until> <address>" on the invalidation bus
MAX_BLOCKED_ADDRESSES = 100_000


class TokenFailures:
    """Failed token authentications per client address, counted where ``counters`` counts (Redis when
    configured, so the limit is shared by every instance), with an in-process "blocked until" map.

    :meth:`blocked` reads only that map (no I/O). :meth:`failed` counts one failure (a Redis round
    trip when configured, so call it off the event loop unless :attr:`local`); when it uses up the
    limit the address goes into the map and ``publish`` tells the other instances at once, which put
    it into theirs (:meth:`note_blocked`).
    """

    def __init__(self, counters: FailureLimiter, per_minute: int, publish: Callable[[str], None] | None = None) -> None:
        self._counters = counters
        self.item = RateLimitItemPerMinute(per_minute)
        self.local = counters.local
        self.publish = publish
        self._blocked: dict[str, float] = {}

    def blocked(self, address: str) -> int:
        """Seconds ``address`` must wait before its next failing attempt is answered; 0 when not blocked."""
        until = self._blocked.get(address)
        if until is None:
            return 0
        wait = until - time.time()
        if wait <= 0:
            self._blocked.pop(address, None)
            return 0
        return max(1, math.ceil(wait))

    def failed(self, address: str) -> int:
        """Count a failed attempt from ``address``. Returns the seconds to answer in ``Retry-After`` when
        this attempt is refused as over the limit, 0 when it is answered as the failure it is."""
        wait = self.blocked(address)
        if wait:
            return wait
        item = self.item

        def count(limiter: strategies.MovingWindowRateLimiter) -> tuple[bool, float]:
            allowed = limiter.hit(item, "auth", address)
            reset_at, remaining = limiter.get_window_stats(item, "auth", address)
            return allowed, (reset_at if remaining <= 0 else 0.0)

        allowed, until = self._counters._use(count)
        if until:
            self.note_blocked(address, until)
            if self.publish is not None:
                self.publish(f"{BLOCK_MESSAGE} {until:.3f} {address}")
        return 0 if allowed else self.blocked(address) or 1

    def note_blocked(self, address: str, until: float) -> None:
        """``address`` is blocked until ``until`` (unix time): from this instance or from another one."""
        if until <= time.time():
            return
        if address not in self._blocked and len(self._blocked) >= MAX_BLOCKED_ADDRESSES:
            now = time.time()
            for stale in [a for a, t in self._blocked.items() if t <= now]:
                del self._blocked[stale]
            while len(self._blocked) >= MAX_BLOCKED_ADDRESSES:
                del self._blocked[next(iter(self._blocked))]  # oldest first
        self._blocked[address] = max(until, self._blocked.get(address, 0.0))

    def on_message(self, message: str) -> bool:
        """Apply a ``block`` message from the bus; False when ``message`` is not one."""
        if not message.startswith(BLOCK_MESSAGE + " "):
            return False
        _, until, address = message.split(" ", 2)
        try:
            self.note_blocked(address, float(until))
        except ValueError:
            log.warning("ignored a malformed block message on the invalidation bus")
        return True

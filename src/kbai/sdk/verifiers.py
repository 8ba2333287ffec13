"""Verifiers: a presented token in, an :class:`Identity` or a :class:`Failure` out, locally or remotely.

:class:`LocalVerifier` runs kbai's own verification pipeline against the kbai database (same
checks, same order, same messages as the kbai API). :class:`IntrospectionVerifier` asks a running
kbai over RFC 7662 with a service credential. Both fail closed: when the answer cannot be had
(database or kbai unreachable, credential rejected, a reply that makes no sense) the result is a
503 :class:`Failure`, never an identity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx
from starlette.concurrency import run_in_threadpool

from kbai import errors
from kbai.errors import KbaiError
from kbai.tokenformat import digest, is_well_formed, redact

if TYPE_CHECKING:
    from kbai.services import Services

log = logging.getLogger("kbai.sdk")

# The SDK's public errors live with every other one, in kbai.errors.
NO_TOKEN = errors.NO_BEARER_TOKEN
TOKEN_INACTIVE = errors.TOKEN_INACTIVE
UNAVAILABLE = errors.AUTH_UNAVAILABLE

MAX_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class Identity:
    """Who a verified token acts for. ``scopes`` are the effective ones: token scopes ∩ owner's permissions now.

    ``user_id`` is the person's id (as ``X-Kbai-User`` and introspection's ``sub``: the same in every tenant
    they belong to); ``tenant_id`` is the one tenant the token acts in. The external ids are the product's
    own ids of that tenant and of the person's membership there, when set.

    A service token (``service_token`` True) belongs to the tenant, not a person: ``user_id`` and ``email``
    are None, and so is ``user_external_id``."""

    user_id: int | None
    email: str | None
    tenant_id: int
    scopes: frozenset[str]
    token_id: int
    expires_at: datetime | None = None
    # The token's IP allowlist (CIDR strings), None: any address. The middleware enforces it.
    allowed_ips: tuple[str, ...] | None = None
    tenant_external_id: str | None = None
    user_external_id: str | None = None
    service_token: bool = False
    # The token has its own rate limit or quota: kbai counts every use (a remote verifier never caches it).
    limited: bool = False

    def missing(self, required: Iterable[str]) -> tuple[str, ...]:
        """The scopes in ``required`` this identity lacks, in the order asked, without repeats."""
        return tuple(s for s in dict.fromkeys(required) if s not in self.scopes)


@dataclass(frozen=True)
class Failure:
    """Why a token was refused, as the public error to answer with (status, code, message)."""

    error: KbaiError

    @property
    def status(self) -> int:
        return self.error.status

    @property
    def code(self) -> str:
        return self.error.code


Result = Identity | Failure


@runtime_checkable
class Verifier(Protocol):
    async def verify(self, token: str) -> Result:
        """Check ``token``; never raises for a bad token or an unreachable backend."""
        ...

    def record_use(self, identity: Identity) -> None:
        """Note that a request authenticated by ``identity`` succeeded (for "Last used")."""
        ...

    async def start(self) -> None:
        """Called once before serving (idempotent)."""
        ...

    async def stop(self) -> None:
        """Called on shutdown: flush and release what :meth:`start` or use acquired (idempotent)."""
        ...


def unavailable() -> Failure:
    return Failure(KbaiError(UNAVAILABLE))


class LocalVerifier:
    """Verify in-process against the kbai database, with kbai's own pipeline.

    Give ``database_url`` (and usually ``permissions_file``), or ready-built ``services``; with
    neither, settings come from the ``KBAI_*`` environment exactly as for ``kbai serve``. The
    permissions file must be the one kbai runs with: a scope missing from the catalog counts as
    held by nobody. Verification goes through kbai's verification cache, so revocations and
    permission changes made elsewhere arrive exactly as they reach another ``kbai serve``: pushed
    at once over the deployment's invalidation channel (Redis, PostgreSQL NOTIFY, the SQLite
    poller) once :meth:`start` ran, else within ``KBAI_CACHE_TTL_SECONDS``. :meth:`start` starts
    the background parts (invalidation subscriber, last-used flusher); :meth:`stop` flushes the
    buffered uses and stops them.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        services: Services | None = None,
        permissions_file: str | Path | None = None,
    ) -> None:
        from kbai.config import Settings
        from kbai.services import Services

        if services is not None and (database_url is not None or permissions_file is not None):
            raise ValueError("Give services, or database_url/permissions_file, not both.")
        if services is None:
            overrides: dict[str, Any] = {}
            if database_url is not None:
                overrides["database_url"] = database_url
            if permissions_file is not None:
                overrides["permissions_file"] = Path(permissions_file)
            services = Services.build(Settings(**overrides))
            self._owns_services = True
        else:
            self._owns_services = False
        self.services = services
        self._stopped = False
        # token id -> (record, effective scopes, the Identity built from them): a warm token's Identity is
        # built once, not per request; a new record (reloaded after an invalidation) or new scopes rebuild it.
        self._identities: dict[int, tuple[object, frozenset[str], Identity]] = {}

    async def verify(self, token: str) -> Result:
        try:
            # A warm token is answered here, on the event loop; only a cache miss pays the thread hop.
            result = self.services.tokens.verify_warm(token)
            if result is None:
                result = await run_in_threadpool(self.services.tokens.verify, token)
        except Exception as exc:  # noqa: BLE001 - fail closed, whatever broke
            log.error(
                "kbai token verification failed (%s: %s); refusing the request",
                type(exc).__name__,
                redact(str(exc))[:300],
            )
            return unavailable()
        record = result.record
        if not result.ok or record is None:
            return Failure(errors.for_outcome(result.outcome.value, result.missing))
        if record.limited:  # its own rate limit and quota, counted as kbai's routes count them
            try:
                admitted = self.services.limits.admit(record, warm_only=True)
                if admitted is None:
                    admitted = await run_in_threadpool(self.services.limits.admit, record)
            except Exception as exc:  # noqa: BLE001 - fail closed
                log.error("kbai token limits could not be counted (%s); refusing the request", type(exc).__name__)
                return unavailable()
            assert admitted is not None
            if admitted.error is not None:
                return Failure(admitted.error)
        built = self._identities.get(record.token_id)
        if built is not None and built[0] is record and built[1] == result.scopes:
            return built[2]
        service = record.service
        identity = Identity(
            user_id=None if service else record.person_id,
            email=None if service else record.email,
            tenant_id=record.tenant_id,
            scopes=result.scopes,
            token_id=record.token_id,
            expires_at=record.expires_at,
            tenant_external_id=record.tenant_external_id,
            user_external_id=None if service else record.user_external_id,
            allowed_ips=record.allowed_ips,
            service_token=service,
            limited=record.limited,
        )
        if len(self._identities) >= 10_000:
            self._identities.clear()
        self._identities[record.token_id] = (record, result.scopes, identity)
        return identity

    def record_use(self, identity: Identity) -> None:
        usage = self.services.usage
        usage.record(identity.token_id, self.services.clock.now())
        if not self._stopped:
            usage.start()  # idempotent; covers apps that never ran a lifespan (no start())

    async def start(self) -> None:
        self._stopped = False
        await run_in_threadpool(self.services.start)  # may wait a moment for the invalidation channel

    async def stop(self) -> None:
        self._stopped = True
        await run_in_threadpool(self.services.stop)
        if self._owns_services:
            self.services.close()


class IntrospectionVerifier:
    """Verify remotely through kbai's ``POST /api/v1/introspect`` (RFC 7662, HTTP Basic).

    ``url`` is the full endpoint, e.g. ``https://kbai.internal/api/v1/introspect``; ``client_id``
    and ``client_secret`` come from ``kbai service-credential create NAME``.

    ``cache_seconds`` (default 0: off) keeps *positive* answers for that long, per instance, to
    save a round trip per request. The price: a token revoked, expired or stripped of a scope in
    kbai keeps working here for up to ``cache_seconds`` (and "Last used" stops moving while
    answers come from the cache). Refusals are never cached. Keep it at a few seconds at most.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        *,
        cache_seconds: float = 0.0,
        max_cache_entries: int = 10_000,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("url must be the http(s) URL of kbai's /api/v1/introspect endpoint.")
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret are required (kbai service-credential create NAME).")
        if not 0 <= cache_seconds <= MAX_CACHE_SECONDS:
            raise ValueError(f"cache_seconds must be between 0 and {MAX_CACHE_SECONDS:g}.")
        if max_cache_entries < 1:
            raise ValueError("max_cache_entries must be at least 1.")
        self.url = url
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self.cache_seconds = float(cache_seconds)
        self.max_cache_entries = max_cache_entries
        self._timeout = timeout
        self._transport = transport
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        # digest of the token -> (identity, good until); never the token itself.
        self._cache: dict[str, tuple[Identity, float]] = {}

    async def verify(self, token: str) -> Result:
        if not is_well_formed(token):
            return Failure(errors.for_outcome("malformed"))
        key = digest(token)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            del self._cache[key]
        result = await self._ask(token)
        # A token with its own rate limit or quota is asked about every time: each use must be counted.
        if isinstance(result, Identity) and self.cache_seconds > 0 and not result.limited:
            self._remember(key, result, now)
        return result

    def record_use(self, identity: Identity) -> None:
        """Nothing to do: kbai marks a token used when it answers an introspection for it."""

    async def start(self) -> None:
        self._get_client()

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        self._cache.clear()

    # ---- helpers -------------------------------------------------------------------------
    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, headers={"Accept": "application/json"}
            )
        return self._client

    async def _ask(self, token: str) -> Result:
        try:
            response = await self._get_client().post(self.url, data={"token": token}, auth=self._auth)
        except Exception as exc:  # noqa: BLE001 - network or anything else: fail closed
            log.error("kbai introspection at %s failed (%s); refusing the request", self.url, type(exc).__name__)
            return unavailable()
        if response.status_code == 401:
            log.error("kbai rejected the service credential at %s; check the client id and secret", self.url)
            return unavailable()
        if response.status_code != 200:
            log.error("kbai introspection at %s answered %s; refusing the request", self.url, response.status_code)
            return unavailable()
        try:
            return _parse(response.json())
        except (ValueError, TypeError, KeyError) as exc:
            log.error(
                "kbai introspection at %s gave an unusable answer (%s); refusing the request",
                self.url,
                type(exc).__name__,
            )
            return unavailable()

    def _remember(self, key: str, identity: Identity, now: float) -> None:
        until = now + self.cache_seconds
        if identity.expires_at is not None:
            until = min(until, identity.expires_at.timestamp())
        if until <= now:
            return
        if len(self._cache) >= self.max_cache_entries:
            for stale in [k for k, (_, t) in self._cache.items() if t <= now]:
                del self._cache[stale]
            while len(self._cache) >= self.max_cache_entries:
                del self._cache[next(iter(self._cache))]  # oldest first
        self._cache[key] = (identity, until)


def _refused(body: dict[str, Any]) -> KbaiError:
    """An inactive answer: a token over its own rate limit or quota (kbai says which), else plain inactive."""
    reason, wait = body.get("kbai_refused"), body.get("retry_after")
    retry = {"retry_after": wait} if isinstance(wait, int) and not isinstance(wait, bool) and wait > 0 else {}
    if reason == "rate_limited":
        limit = body.get("rate_limit")
        text = (
            f"{limit['requests']:,} per {limit['per']}"
            if isinstance(limit, dict) and isinstance(limit.get("requests"), int) and isinstance(limit.get("per"), str)
            else "its own"
        )
        return KbaiError(errors.TOKEN_RATE_LIMITED, limit=text, retry_after=retry.get("retry_after", 1))
    if reason == "quota_exhausted":
        return KbaiError(errors.QUOTA_EXHAUSTED, until="", **retry)
    return KbaiError(TOKEN_INACTIVE)


def _parse(body: object) -> Result:
    """An RFC 7662 answer from kbai as an Identity or a 401 Failure; raises on nonsense."""
    if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
        raise ValueError("no boolean 'active'")
    if not body["active"]:
        return Failure(_refused(body))
    scope = body.get("scope", "")
    service = body.get("service_token") is True
    if not isinstance(scope, str) or not (service or isinstance(body["username"], str)):
        raise TypeError("scope and username must be strings")
    sub = body["sub"]
    if service and not (isinstance(sub, str) and sub.startswith("service:")):
        raise TypeError("a service token's sub is service:{id}")
    allowed = body.get("allowed_ips")
    if allowed is not None and (not isinstance(allowed, list) or not all(isinstance(c, str) for c in allowed)):
        raise TypeError("allowed_ips must be a list of strings")
    exp = body.get("exp")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int)):
        raise TypeError("exp must be an integer")
    return Identity(
        user_id=None if service else _int(sub),
        email=None if service else body["username"],
        tenant_id=_int(body["tenant"]),
        scopes=frozenset(scope.split()),
        token_id=_int(body["token_id"]),
        expires_at=None if exp is None else datetime.fromtimestamp(exp, UTC),
        allowed_ips=tuple(allowed) if allowed is not None else None,
        tenant_external_id=_text(body.get("tenant_external_id")),
        user_external_id=None if service else _text(body.get("user_external_id")),
        service_token=service,
        limited="rate_limit" in body or "quota_remaining" in body,
    )


def _text(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("external ids must be strings")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError("expected an integer")
    return int(value)

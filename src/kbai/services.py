"""The composition root: builds the database, clock, catalog and services once, from settings.

The CLI and the web app both start here, so they can never disagree on how things are wired.
"""

from __future__ import annotations

from dataclasses import dataclass

from kbai.access.catalog import Catalog
from kbai.access.credentials import CredentialService
from kbai.access.passwords import Passwords
from kbai.access.provisioning import ProvisioningCredentials
from kbai.access.requests import AdminRequests
from kbai.access.service import AccessService
from kbai.access.sessions import SessionService
from kbai.cache.bus import ALL, Bus
from kbai.cache.bus import for_settings as bus_for
from kbai.cache.verification import VerificationCache
from kbai.clock import Clock, FrozenClock, SystemClock
from kbai.config import Settings
from kbai.delivery.mail import Mailer
from kbai.delivery.notifications import Notifications
from kbai.delivery.outbox import Outbox
from kbai.delivery.webhooks import Webhooks
from kbai.egress import Guard
from kbai.identity.oidc import OidcClient, OidcConfig
from kbai.identity.scim import Scim
from kbai.identity.signin import OidcSignIn
from kbai.lifecycle.activity import ActivityService
from kbai.lifecycle.hygiene import AutoRevoke
from kbai.lifecycle.inventory import Inventory
from kbai.lifecycle.leaks import LeakResponse
from kbai.lifecycle.reminders import Reminders
from kbai.lifecycle.reuse import ReuseAlerts
from kbai.metrics import Metrics
from kbai.partner_keys import PartnerKeys
from kbai.ratelimit import FailureLimiter, LoginThrottle, TokenFailures
from kbai.secretbox import SecretBox
from kbai.store import Database
from kbai.tokens.limits import TokenLimits
from kbai.tokens.policy import PolicyService
from kbai.tokens.service import TokenService
from kbai.tokens.usage import UsageBuffer


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    catalog: Catalog
    passwords: Passwords
    access: AccessService
    sessions: SessionService
    credentials: CredentialService
    tokens: TokenService
    usage: UsageBuffer
    limits: TokenLimits
    limiter: FailureLimiter
    token_failures: TokenFailures
    metrics: Metrics
    cache: VerificationCache
    bus: Bus
    notifications: Notifications
    leaks: LeakResponse
    partner_keys: PartnerKeys
    policies: PolicyService
    activity: ActivityService
    inventory: Inventory
    reuse: ReuseAlerts
    mailer: Mailer | None
    outbox: Outbox
    reminders: Reminders
    auto_revoke: AutoRevoke
    provisioning: ProvisioningCredentials
    scim: Scim
    oidc: OidcSignIn | None = None  # sign-in with the product's OpenID provider, when KBAI_OIDC_* are set

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None, db: Database | None = None) -> Services:
        # KBAI_FAKE_NOW is for tests only: it stops this process's clock at a chosen time.
        clock = clock or (FrozenClock(settings.fake_now) if settings.fake_now else SystemClock())
        db = db or Database(settings.database_url)
        catalog = Catalog.load(settings.permissions_file)
        passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
        access = AccessService(db, clock, catalog, passwords)
        metrics = Metrics()

        def _written(rows: int) -> None:
            metrics.last_used_writes.inc(rows)
            metrics.last_used_flushes.inc()

        tokens = TokenService(
            db,
            clock,
            catalog,
            default_limit=settings.default_max_active_tokens,
            default_service_limit=settings.default_max_service_tokens,
            support_email=settings.support_email,
        )
        bus = bus_for(settings, db)
        max_age_listening, max_age_alone = settings.cache_max_age_seconds, settings.cache_ttl_seconds

        def max_age() -> float | None:
            # Listening: changes arrive at once, entries are kept up to the max age (a safety net).
            # Started but not listening (channel lost): bypass. Never started (CLI, SDK without a
            # lifespan): nothing tells this process about changes, so entries live only the short TTL.
            if max_age_alone == 0:
                return 0.0
            if bus.healthy:
                return max_age_listening
            return None if bus.started else max_age_alone

        cache = VerificationCache(
            tokens.load_record,
            negative_ttl_seconds=settings.negative_cache_seconds,
            max_age=max_age,
        )
        tokens.lookup = cache.lookup
        tokens.peek = cache.peek
        metrics.channel_up.set_function(lambda: 1.0 if bus.healthy else 0.0)

        def tokens_changed(digests: set[str], _users: set[int]) -> None:
            cache.invalidate(digests)
            bus.publish_many(sorted(digests))

        def access_changed() -> None:
            cache.clear()
            bus.publish(ALL)

        tokens.listeners.append(tokens_changed)
        access.listeners.append(access_changed)
        limiter = FailureLimiter(
            settings.redis_url,
            settings.redis_prefix,
            settings.auth_failures_per_minute,
            settings.login_failures_per_minute,
        )
        mailer = Mailer.from_settings(settings)
        guard = Guard.from_setting(settings.webhook_allowed_networks)
        secrets = SecretBox.configure(settings.encryption_key, settings.database_url)
        outbox = Outbox(
            db,
            clock,
            webhooks=Webhooks(clock, guard, settings.outbound_deadline_seconds),
            mailer=mailer,
            secrets=secrets,
            deadline_seconds=settings.outbound_deadline_seconds,
        )
        notifications = Notifications(db, clock, outbox, settings.public_url)
        access.outbox = outbox  # invitation emails
        # However a requester of "Ask an admin" comes to hold the permission, they are told.
        access.grant_listeners.append(AdminRequests(access, notifications).resolve_granted)
        oidc_config = OidcConfig.from_settings(settings)
        advice = f" Sign in with {oidc_config.provider_name} instead." if oidc_config else ""
        sessions = SessionService(
            access,
            settings.session_ttl_seconds,
            LoginThrottle(limiter, settings.login_account_failures_per_day, settings.login_account_max_delay_seconds),
            password_login=settings.password_login,
            password_login_advice=advice,
        )
        oidc = OidcSignIn(OidcClient(oidc_config, clock), access, sessions) if oidc_config else None
        provisioning = ProvisioningCredentials(db, clock, catalog)
        leaks = LeakResponse(tokens, notifications)
        leaks.other_secrets.append(provisioning.revoke_leaked)
        return cls(
            settings=settings,
            db=db,
            clock=clock,
            catalog=catalog,
            passwords=passwords,
            access=access,
            sessions=sessions,
            credentials=CredentialService(db, clock, catalog, settings.operator_tenant),
            tokens=tokens,
            usage=UsageBuffer(db, settings.last_used_flush_seconds, on_write=_written),
            limits=TokenLimits(db, clock, notifications, outbox),
            limiter=limiter,
            # A block may be announced from the event loop (in-memory counts): never wait for that I/O there.
            token_failures=TokenFailures(limiter, settings.auth_failures_per_minute, publish=bus.publish_later),
            metrics=metrics,
            cache=cache,
            bus=bus,
            notifications=notifications,
            leaks=leaks,
            partner_keys=PartnerKeys(settings.secret_scanning_keys_file),
            policies=PolicyService(db, clock, guard, secrets),
            activity=ActivityService(db, clock),
            inventory=Inventory(tokens, notifications),
            reuse=ReuseAlerts(db, clock, notifications),
            mailer=mailer,
            outbox=outbox,
            reminders=Reminders(db, clock, notifications, outbox, catalog),
            auto_revoke=AutoRevoke(tokens, notifications),
            provisioning=provisioning,
            scim=Scim(db, clock, access),
            oidc=oidc,
        )

    def start(self) -> None:
        """Start the background parts of a serving process: invalidation subscriber, last-used flusher, and
        the outbox dispatcher (emails and webhooks leave after the request's commit, without holding it up)."""
        self.bus.start(self._on_invalidation)
        self.usage.start()
        self.outbox.start()

    def stop(self) -> None:
        self.limits.close()  # unspent quota shares go back before the outbox stops (a low-quota alert may be queued)
        self.outbox.stop()
        self.usage.stop()
        self.bus.stop()

    def _on_invalidation(self, message: str) -> None:
        if self.token_failures.on_message(message):
            return
        if message == ALL:
            self.cache.clear()
        else:
            self.cache.invalidate([message])

    def close(self) -> None:
        self.limits.close()
        self.db.dispose()

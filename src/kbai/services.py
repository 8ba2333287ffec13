"""The composition root: builds the database, clock, catalog and services once, from settings.

The CLI and the web app both start here, so they can never disagree on how things are wired.
"""

from __future__ import annotations

from dataclasses import dataclass

from kbai.access.catalog import Catalog
from kbai.access.passwords import Passwords
from kbai.access.service import AccessService
from kbai.clock import Clock, SystemClock
from kbai.config import Settings
from kbai.store import Database
from kbai.tokens.service import TokenService


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    catalog: Catalog
    passwords: Passwords
    access: AccessService
    tokens: TokenService

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None, db: Database | None = None) -> Services:
        clock = clock or SystemClock()
        db = db or Database(settings.database_url)
        catalog = Catalog.load(settings.permissions_file)
        passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
        return cls(
            settings=settings,
            db=db,
            clock=clock,
            catalog=catalog,
            passwords=passwords,
            access=AccessService(db, clock, catalog, passwords),
            tokens=TokenService(
                db, clock, catalog,
                default_limit=settings.default_max_active_tokens,
                support_email=settings.support_email,
            ),
        )

    def close(self) -> None:
        self.db.dispose()

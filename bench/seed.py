"""Synthetic but realistic data: tenants, roles, users, and tokens whose digests are the real SHA-256
of freshly minted tokens, so every lookup walks the same index a production lookup would.

Shape (per tenant): the built-in Admin and Member roles plus a "Developers" role holding
developer.manage_tokens, users.read and roles.read; 10 tokens per user (7 active, 2 revoked,
1 expired), so every user is under the default limit of 10 active tokens and can still create 3.
The first user of each tenant is its admin, the others are developers.

Only the plaintexts of a random sample of active tokens are kept, in memory, never written out.
PostgreSQL is loaded with COPY (foreign-key triggers off for the load: the rows are consistent by
construction), SQLite with executemany; both then run ANALYZE.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from common import Progress, log

TOKENS_PER_USER = 10
ACTIVE_PER_USER = 7  # slots 0..6 active, 7..8 revoked, 9 expired
BENCH_PASSWORD = "bench-password-1"
DEV_PERMISSIONS = ("developer.manage_tokens", "users.read", "roles.read")
_SCOPES = ('["users.read"]', '["users.read", "roles.read"]', '["roles.read"]', "[]")
_TS = "%Y-%m-%d %H:%M:%S.000000"  # SQLAlchemy's SQLite storage format; PostgreSQL reads it too


@dataclass(frozen=True)
class SampleToken:
    token: str = field(repr=False)
    token_id: int
    user_id: int
    tenant_id: int


@dataclass
class Dataset:
    tenants: int
    users_per_tenant: int
    tokens: int
    users: int
    sample: list[SampleToken]
    load_seconds: float = 0.0

    def user(self, user_id: int) -> tuple[int, str]:
        """(tenant_id, email) of a user, from the layout."""
        tenant_id = (user_id - 1) // self.users_per_tenant + 1
        return tenant_id, email_of(user_id, tenant_id)

    def is_admin(self, user_id: int) -> bool:
        return (user_id - 1) % self.users_per_tenant == 0


def email_of(user_id: int, tenant_id: int) -> str:
    return f"u{user_id}@t{tenant_id}.bench.test"


def layout(tokens: int, tenants: int) -> int:
    """Users per tenant for ``tokens`` spread evenly over ``tenants`` at 10 tokens per user."""
    per_tenant, rest = divmod(tokens, tenants)
    users, rest2 = divmod(per_tenant, TOKENS_PER_USER)
    if rest or rest2 or users < 1:
        raise ValueError(f"{tokens} tokens do not spread evenly over {tenants} tenants at 10 per user")
    return users


def _password_hash() -> str:
    from kbai.access.passwords import Passwords

    return Passwords(time_cost=1, memory_kib=64, parallelism=1).hash(BENCH_PASSWORD)


def _rows(
    tenants: int, users_per_tenant: int, sample_ids: set[int], sample: list[SampleToken], now: datetime
) -> dict[str, Iterator[list[tuple[object, ...]]]]:
    """Row generators per table, in chunks; token rows fill ``sample`` as they pass."""
    from kbai import tokenformat as fmt

    pw = _password_hash()
    stamp = now.strftime(_TS)
    days = [(now - timedelta(days=d)).strftime(_TS) for d in range(0, 400)]
    future = (now + timedelta(days=90)).strftime(_TS)
    yesterday = days[1]

    def tenant_rows() -> Iterator[list[tuple[object, ...]]]:
        yield [(t, f"Bench tenant {t:06d}", stamp, None) for t in range(1, tenants + 1)]

    def role_rows() -> Iterator[list[tuple[object, ...]]]:
        chunk = []
        for t in range(1, tenants + 1):
            base = 3 * (t - 1)
            chunk += [
                (base + 1, t, "Admin", "admin", stamp),
                (base + 2, t, "Member", "member", stamp),
                (base + 3, t, "Developers", None, stamp),
            ]
        yield chunk

    def role_permission_rows() -> Iterator[list[tuple[object, ...]]]:
        yield [(3 * (t - 1) + 3, p) for t in range(1, tenants + 1) for p in DEV_PERMISSIONS]

    def person_rows() -> Iterator[list[tuple[object, ...]]]:
        chunk = []
        for t in range(1, tenants + 1):
            for j in range(users_per_tenant):
                uid = (t - 1) * users_per_tenant + j + 1
                chunk.append((uid, email_of(uid, t), pw, stamp, t))
            if len(chunk) >= 20_000:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def user_rows() -> Iterator[list[tuple[object, ...]]]:
        # One membership per person (the person's id is the membership's): users are memberships since 0010.
        chunk = []
        for t in range(1, tenants + 1):
            for j in range(users_per_tenant):
                uid = (t - 1) * users_per_tenant + j + 1
                chunk.append((uid, t, uid, True, stamp, None, None))
            if len(chunk) >= 20_000:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def user_role_rows() -> Iterator[list[tuple[object, ...]]]:
        chunk = []
        for t in range(1, tenants + 1):
            for j in range(users_per_tenant):
                uid = (t - 1) * users_per_tenant + j + 1
                chunk.append((uid, 3 * (t - 1) + (1 if j == 0 else 3)))
            if len(chunk) >= 20_000:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def token_rows() -> Iterator[list[tuple[object, ...]]]:
        rng = random.Random(7)
        mint, digest = fmt.mint, fmt.digest
        chunk: list[tuple[object, ...]] = []
        for t in range(1, tenants + 1):
            for j in range(users_per_tenant):
                uid = (t - 1) * users_per_tenant + j + 1
                for k in range(TOKENS_PER_USER):
                    tid = (uid - 1) * TOKENS_PER_USER + k + 1
                    plaintext = mint()
                    created = days[rng.randrange(2, 400)]
                    expires = revoked = revoked_by = None
                    if k < ACTIVE_PER_USER:
                        expires = None if k % 3 == 0 else future
                    elif k < TOKENS_PER_USER - 1:
                        revoked, revoked_by = yesterday, "bench"
                    else:
                        expires = yesterday
                    last_used = days[rng.randrange(0, 2)] if k % 2 else None
                    chunk.append(
                        (
                            tid,
                            t,
                            uid,
                            f"integration {k}",
                            plaintext[:12],
                            digest(plaintext),
                            _SCOPES[k % len(_SCOPES)],
                            created,
                            expires,
                            revoked,
                            revoked_by,
                            last_used,
                            None,
                        )
                    )
                    if tid in sample_ids:
                        sample.append(SampleToken(plaintext, tid, uid, t))
                    if len(chunk) >= 10_000:
                        yield chunk
                        chunk = []
        if chunk:
            yield chunk

    return {
        "tenants": tenant_rows(),
        "roles": role_rows(),
        "role_permissions": role_permission_rows(),
        "persons": person_rows(),
        "users": user_rows(),
        "user_roles": user_role_rows(),
        "tokens": token_rows(),
    }


COLUMNS = {
    "tenants": ("id", "name", "created_at", "max_active_tokens"),
    "roles": ("id", "tenant_id", "name", "builtin", "created_at"),
    "role_permissions": ("role_id", "permission"),
    "persons": ("id", "email", "password_hash", "created_at", "last_tenant_id"),
    "users": (
        "id",
        "tenant_id",
        "person_id",
        "active",
        "created_at",
        "deactivated_at",
        "max_active_tokens",
    ),
    "user_roles": ("user_id", "role_id"),
    "tokens": (
        "id",
        "tenant_id",
        "user_id",
        "name",
        "prefix",
        "digest",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
        "rotated_from_id",
    ),
}


def _sample_ids(tenants: int, users_per_tenant: int, size: int) -> set[int]:
    rng = random.Random(11)
    users = tenants * users_per_tenant
    ids: set[int] = set()
    while len(ids) < min(size, users * ACTIVE_PER_USER):
        uid = rng.randrange(1, users + 1)
        ids.add((uid - 1) * TOKENS_PER_USER + rng.randrange(ACTIVE_PER_USER) + 1)
    return ids


def load(database_url: str, tokens: int, tenants: int, sample_size: int = 2000) -> Dataset:
    """Fill a freshly migrated database (SQLite or PostgreSQL) and return the layout and the sample."""
    import time

    users_per_tenant = layout(tokens, tenants)
    sample: list[SampleToken] = []
    rows = _rows(
        tenants,
        users_per_tenant,
        _sample_ids(tenants, users_per_tenant, sample_size),
        sample,
        datetime.now(UTC).replace(microsecond=0),
    )
    started = time.monotonic()
    progress = Progress(f"loading {tokens:,} tokens / {tenants:,} tenants", tokens)
    if database_url.startswith("sqlite"):
        _load_sqlite(database_url, rows, progress)
    else:
        _load_pg(database_url, rows, progress)
    progress.close()
    rng = random.Random(3)
    rng.shuffle(sample)
    ds = Dataset(
        tenants, users_per_tenant, tokens, tenants * users_per_tenant, sample, round(time.monotonic() - started, 2)
    )
    log(f"loaded {tokens:,} tokens, {ds.users:,} users, {tenants:,} tenants in {ds.load_seconds} s")
    return ds


def _load_pg(database_url: str, rows: dict[str, Iterator[list[tuple[object, ...]]]], progress: Progress) -> None:
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            cur.execute("SET session_replication_role = replica")  # FK triggers off for the bulk load
            cur.execute("SET synchronous_commit = off")
            for table, chunks in rows.items():
                cols = ", ".join(COLUMNS[table])
                with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for chunk in chunks:
                        copy.write(
                            "".join("\t".join("\\N" if v is None else str(v) for v in row) + "\n" for row in chunk)
                        )
                        if table == "tokens":
                            progress.update(len(chunk))
            for table in ("tenants", "roles", "persons", "users", "tokens"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            cur.execute("SET session_replication_role = origin")
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")


def _load_sqlite(database_url: str, rows: dict[str, Iterator[list[tuple[object, ...]]]], progress: Progress) -> None:
    import sqlite3

    path = database_url.split("sqlite:///", 1)[1]
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("BEGIN")
        for table, chunks in rows.items():
            marks = ", ".join("?" for _ in COLUMNS[table])
            sql = f"INSERT INTO {table} ({', '.join(COLUMNS[table])}) VALUES ({marks})"
            for chunk in chunks:
                conn.executemany(sql, chunk)
                if table == "tokens":
                    progress.update(len(chunk))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()

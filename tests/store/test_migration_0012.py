"""Migration 0012 (per-token restrictions) on a database with tokens in it, both backends: every row kept,
the new columns at their "no restriction" values, and back down again."""

from __future__ import annotations

from sqlalchemy import inspect, text

from kbai.store import Database
from tests.store.test_migration_0010 import _alembic, empty_url  # noqa: F401 - the fixture; migrations run as kbai db upgrade runs them


def test_0012_keeps_every_token_unrestricted_and_downgrades(empty_url: str) -> None:  # noqa: F811
    db = Database(empty_url)
    _alembic(db, "upgrade", "0009")
    with db.write_engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (1, 'Acme', '2026-01-01 00:00:00')"))
        conn.execute(
            text(
                "INSERT INTO users (id, tenant_id, email, password_hash, active, created_at) "
                "VALUES (1, 1, 'dev@acme.test', 'h', true, '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO tokens (id, tenant_id, user_id, name, prefix, digest, scopes, created_at) "
                "VALUES (1, 1, 1, 'cron', 'kbai_pk_0000', :d, '[]', '2026-01-01 00:00:00')"
            ),
            {"d": "0" * 64},
        )
        conn.execute(
            text(
                "INSERT INTO tenant_policies (tenant_id, expiration_required, updated_at) "
                "VALUES (1, false, '2026-01-01 00:00:00')"
            )
        )
    _alembic(db, "upgrade", "0012")
    with db.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT name, paused_at, description, allowed_ips, self_rotate, refused_count, "
                "reuse_alerted_at FROM tokens"
            )
        ).one()
        assert tuple(row) == ("cron", None, None, None, False, 0, None)
        assert conn.execute(text("SELECT require_allowlist FROM tenant_policies")).scalar() in (False, 0)
    _alembic(db, "downgrade", "0009")
    assert "paused_at" not in {c["name"] for c in inspect(db.engine).get_columns("tokens")}
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tokens")).scalar() == 1
    db.dispose()

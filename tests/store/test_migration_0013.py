"""Migration 0013 (service tokens) on a database with tokens and usage in it, both backends: every row and
its usage kept, ``user_id`` nullable afterwards, the tenant columns at "default", and back down again
(service tokens, which the older schema cannot hold, are removed with their usage)."""

from __future__ import annotations

from sqlalchemy import inspect, text

from kbai.store import Database
from tests.store.test_migration_0010 import _alembic, empty_url  # noqa: F401 - the fixture; migrations run as kbai db upgrade runs them

T = "'2026-01-01 00:00:00'"


def test_0013_keeps_tokens_and_usage_allows_service_tokens_and_downgrades(empty_url: str) -> None:  # noqa: F811
    db = Database(empty_url)
    _alembic(db, "upgrade", "0012")
    with db.write_engine.begin() as conn:
        for sql in (
            f"INSERT INTO tenants (id, name, created_at) VALUES (1, 'Acme', {T})",
            f"INSERT INTO persons (id, email, created_at) VALUES (1, 'dev@acme.test', {T})",
            f"INSERT INTO users (id, tenant_id, person_id, active, created_at) VALUES (1, 1, 1, true, {T})",
            "INSERT INTO tokens (id, tenant_id, user_id, name, prefix, digest, scopes, created_at, allowed_ips) "
            f"VALUES (1, 1, 1, 'cron', 'kbai_pk_0000', '{'0' * 64}', '[\"users.read\"]', {T}, '[\"10.0.0.0/8\"]')",
            f"INSERT INTO token_usage_hourly (token_id, hour, requests) VALUES (1, {T}, 7)",
        ):
            conn.execute(text(sql))
    _alembic(db, "upgrade", "0013")
    columns = {c["name"]: c for c in inspect(db.engine).get_columns("tokens")}
    assert columns["user_id"]["nullable"] is True
    assert "created_by_user_id" in columns
    with db.engine.connect() as conn:
        row = conn.execute(text("SELECT name, user_id, created_by_user_id, scopes, allowed_ips FROM tokens")).one()
        assert row[:3] == ("cron", 1, None)
        assert "users.read" in str(row[3]) and "10.0.0.0/8" in str(row[4])
        assert conn.execute(text("SELECT requests FROM token_usage_hourly")).scalar() == 7
        tenant = conn.execute(text("SELECT max_service_tokens, service_token_ceiling FROM tenants")).one()
        assert tuple(tenant) == (None, None)
    with db.write_engine.begin() as conn:  # a service token: no owner, a creator
        conn.execute(
            text(
                "INSERT INTO tokens (id, tenant_id, user_id, created_by_user_id, name, prefix, digest, scopes, "
                f"created_at) VALUES (2, 1, NULL, 1, 'ci', 'kbai_pk_1111', '{'1' * 64}', '[]', {T})"
            )
        )
        conn.execute(text(f"INSERT INTO token_usage_hourly (token_id, hour, requests) VALUES (2, {T}, 3)"))
    _alembic(db, "downgrade", "0012")
    columns = {c["name"]: c for c in inspect(db.engine).get_columns("tokens")}
    assert "created_by_user_id" not in columns and columns["user_id"]["nullable"] is False
    assert "max_service_tokens" not in {c["name"] for c in inspect(db.engine).get_columns("tenants")}
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM tokens")).scalars().all() == [1]
        assert conn.execute(text("SELECT token_id, requests FROM token_usage_hourly")).all() == [(1, 7)]
    db.dispose()

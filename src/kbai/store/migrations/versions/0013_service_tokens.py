"""Service tokens, owned by the tenant: ``tokens.user_id`` may be NULL, ``tokens.created_by_user_id`` names
who created one (or owned it before a hand-over); per tenant a limit (``max_service_tokens``) and a ceiling
(``service_token_ceiling``, a JSON list of permission keys) for them.

On SQLite, making ``user_id`` nullable rebuilds the tokens table. With foreign keys enforced, dropping the
old table would cascade into token_usage_hourly, so this migration refuses to run unless they are off:
``Database.upgrade`` (``kbai db upgrade``, ``kbai serve``) turns them off around the migrations and checks
every reference afterwards.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _sqlite_foreign_keys_off() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return False
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0013 rebuilds the tokens table: run it with SQLite foreign keys off "
            "(kbai db upgrade does), or the rebuild would cascade into token usage rows"
        )
    return True


def upgrade() -> None:
    sqlite = _sqlite_foreign_keys_off()
    op.add_column("tenants", sa.Column("max_service_tokens", sa.Integer(), nullable=True))
    op.add_column("tenants", sa.Column("service_token_ceiling", sa.JSON(), nullable=True))
    with op.batch_alter_table("tokens", recreate="always" if sqlite else "never") as batch:
        batch.alter_column("user_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("created_by_user_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_tokens_created_by_user_id", "users", ["created_by_user_id"], ["id"])


def downgrade() -> None:
    sqlite = _sqlite_foreign_keys_off()
    # A service token has no owner to go back to: it cannot exist in the older schema.
    for table in ("token_usage_hourly", "token_reminders"):
        op.execute(f"DELETE FROM {table} WHERE token_id IN (SELECT id FROM tokens WHERE user_id IS NULL)")
    op.execute(
        "UPDATE tokens SET rotated_from_id = NULL "
        "WHERE rotated_from_id IN (SELECT id FROM tokens WHERE user_id IS NULL)"
    )
    op.execute("DELETE FROM tokens WHERE user_id IS NULL")
    with op.batch_alter_table("tokens", recreate="always" if sqlite else "never") as batch:
        batch.drop_constraint("fk_tokens_created_by_user_id", type_="foreignkey")
        batch.drop_column("created_by_user_id")
        batch.alter_column("user_id", existing_type=sa.Integer(), nullable=False)
    op.drop_column("tenants", "service_token_ceiling")
    op.drop_column("tenants", "max_service_tokens")

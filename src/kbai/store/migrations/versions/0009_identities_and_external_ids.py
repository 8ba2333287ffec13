"""OpenID Connect sign-in: identities (issuer, subject) -> user; external ids on tenants and users.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


# Plain ADD COLUMN and unique indexes, never a batch copy of tenants or users: on SQLite a copy drops and
# recreates the table, and with foreign keys enforced that would cascade into user_roles and sessions.
def upgrade() -> None:
    op.add_column("tenants", sa.Column("external_id", sa.String(length=200), nullable=True))
    op.create_index("uq_tenants_external_id", "tenants", ["external_id"], unique=True)
    op.add_column("users", sa.Column("external_id", sa.String(length=200), nullable=True))
    op.create_index("uq_users_tenant_external_id", "users", ["tenant_id", "external_id"], unique=True)
    op.create_table(
        "identities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("issuer", "subject", name="uq_identities_issuer_subject"),
    )
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_identities_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identities_user_id"))
    op.drop_table("identities")
    op.drop_index("uq_users_tenant_external_id", table_name="users")
    op.drop_column("users", "external_id")  # (SQLite 3.35+ drops a column in place)
    op.drop_index("uq_tenants_external_id", table_name="tenants")
    op.drop_column("tenants", "external_id")

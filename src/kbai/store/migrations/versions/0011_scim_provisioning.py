"""SCIM provisioning: per-tenant provisioning credentials (digest only) and the SCIM attributes kbai keeps
beside a membership (userName, name, emails...) and beside a role (a Group's externalId). Service
credentials gain abilities (introspect, tenants, tokens); existing ones keep introspect alone.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy of the table): existing credentials may introspect, nothing more.
    op.add_column(
        "service_credentials",
        sa.Column("abilities", sa.String(length=200), nullable=False, server_default="introspect"),
    )
    op.create_table(
        "provisioning_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=254), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_digest", name="uq_provisioning_credentials_digest"),
    )
    op.create_index("ix_provisioning_credentials_tenant_id", "provisioning_credentials", ["tenant_id"])
    op.create_table(
        "scim_users",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("user_name", sa.String(length=254), nullable=False),
        sa.Column("user_name_key", sa.String(length=254), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
        sa.UniqueConstraint("tenant_id", "user_name_key", name="uq_scim_users_tenant_user_name"),
    )
    op.create_table(
        "scim_groups",
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["role_id"], ["roles.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("role_id"),
    )


def downgrade() -> None:
    with op.batch_alter_table("service_credentials", schema=None) as batch_op:
        batch_op.drop_column("abilities")
    op.drop_table("scim_groups")
    op.drop_table("scim_users")
    op.drop_index("ix_provisioning_credentials_tenant_id", table_name="provisioning_credentials")
    op.drop_table("provisioning_credentials")

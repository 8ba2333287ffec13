"""Per-token restrictions: pause, description, IP allowlist, self-rotation, and refusals counted per token;
a tenant policy that requires an allowlist.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


# Plain ADD COLUMN (with a server default where NOT NULL), never a batch copy of tokens: on SQLite a copy
# drops and recreates the table, and with foreign keys enforced that would cascade into usage rows.
def upgrade() -> None:
    op.add_column("tokens", sa.Column("paused_at", sa.DateTime(), nullable=True))
    op.add_column("tokens", sa.Column("description", sa.String(length=500), nullable=True))
    op.add_column("tokens", sa.Column("allowed_ips", sa.JSON(), nullable=True))
    op.add_column("tokens", sa.Column("self_rotate", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("tokens", sa.Column("refused_count", sa.Integer(), server_default="0", nullable=False))
    op.add_column("tokens", sa.Column("last_refused_at", sa.DateTime(), nullable=True))
    op.add_column("tokens", sa.Column("last_refused_ip", sa.String(length=64), nullable=True))
    op.add_column("tokens", sa.Column("reuse_alerted_at", sa.DateTime(), nullable=True))
    op.add_column(
        "tenant_policies", sa.Column("require_allowlist", sa.Boolean(), server_default=sa.false(), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("tenant_policies", "require_allowlist")
    for column in (
        "reuse_alerted_at",
        "last_refused_ip",
        "last_refused_at",
        "refused_count",
        "self_rotate",
        "allowed_ips",
        "description",
        "paused_at",
    ):
        op.drop_column("tokens", column)  # (SQLite 3.35+ drops a column in place)

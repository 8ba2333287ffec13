"""The invalidation bus of processes sharing a SQLite database: a table each one polls.

Revision ID: 0007
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bus_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_bus_messages_created_at", "bus_messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_bus_messages_created_at", table_name="bus_messages")
    op.drop_table("bus_messages")

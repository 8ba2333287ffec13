"""Per-token rate limit and quota: the limit and quota columns on tokens, and the shared count of each rate
window (``token_rate_windows``) that the instances take shares of.

Plain ADD COLUMN with server defaults, never a batch copy of tokens (see 0012).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("rate_limit_requests", sa.Integer()),
    ("rate_limit_per", sa.String(length=10)),
    ("quota_remaining", sa.Integer()),
    ("quota_total", sa.Integer()),
    ("quota_refill_amount", sa.Integer()),
    ("quota_refill_interval", sa.String(length=10)),
    ("quota_period_start", sa.DateTime()),
    ("quota_low_at", sa.DateTime()),
)


def upgrade() -> None:
    for name, kind in _COLUMNS:
        op.add_column("tokens", sa.Column(name, kind, nullable=True))
    op.add_column("tokens", sa.Column("quota_version", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "token_rate_windows",
        sa.Column("token_id", sa.Integer(), sa.ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("window_start", sa.DateTime(), primary_key=True),
        sa.Column("granted", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("token_rate_windows")
    op.drop_column("tokens", "quota_version")
    for name, _kind in reversed(_COLUMNS):
        op.drop_column("tokens", name)  # (SQLite 3.35+ drops a column in place)

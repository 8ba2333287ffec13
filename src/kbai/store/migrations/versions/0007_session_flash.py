"""A one-time message on a login session (the page after a redirect shows it once): sessions.flash.

It carries a token that was just created or rotated from the POST to the page it redirects to, so a
reload never submits the form again. It is encrypted with a key derived from the session cookie,
which the database never holds, and cleared when the page shows it.

Revision ID: 0008
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flash", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("flash")

"""The outbox (webhooks and email leave after the commit), and webhook secrets encrypted at rest.

Existing secrets (``kbai_whsec_...``, stored in clear by 0004) are encrypted with the key of
``kbai.secretbox`` (``KBAI_ENCRYPTION_KEY``, or on SQLite the key file beside the database), and
the clear column is dropped. They keep their value, so receivers keep verifying (see
kbai.delivery.webhooks). On PostgreSQL without ``KBAI_ENCRYPTION_KEY`` the upgrade stops with a message
saying so, when (and only when) there is a secret to encrypt.

Revision ID: 0005
Revises: 0004
"""

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

if TYPE_CHECKING:
    from kbai.secretbox import SecretBox

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_policies = sa.table(
    "tenant_policies",
    sa.column("tenant_id", sa.Integer()),
    sa.column("webhook_secret", sa.String()),
    sa.column("webhook_secret_encrypted", sa.Text()),
)


def _box() -> "SecretBox":
    from kbai.config import get_settings
    from kbai.secretbox import SecretBox

    bind = op.get_bind()
    return SecretBox.configure(get_settings().encryption_key, bind.engine.url.render_as_string(hide_password=True))


def upgrade() -> None:
    with op.batch_alter_table("tenant_policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_secret_encrypted", sa.Text(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_policies.c.tenant_id, _policies.c.webhook_secret).where(_policies.c.webhook_secret.is_not(None))
    ).all()
    if rows:
        box = _box()
        for tenant_id, secret in rows:
            bind.execute(
                _policies.update()
                .where(_policies.c.tenant_id == tenant_id)
                .values(webhook_secret_encrypted=box.encrypt(secret))
            )
    with op.batch_alter_table("tenant_policies", schema=None) as batch_op:
        batch_op.drop_column("webhook_secret")

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("failed_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_due", ["sent_at", "failed_at", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_tenant_id"))
        batch_op.drop_index("ix_outbox_due")
    op.drop_table("outbox")
    with op.batch_alter_table("tenant_policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=100), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_policies.c.tenant_id, _policies.c.webhook_secret_encrypted).where(
            _policies.c.webhook_secret_encrypted.is_not(None)
        )
    ).all()
    if rows:
        box = _box()
        for tenant_id, sealed in rows:
            bind.execute(
                _policies.update().where(_policies.c.tenant_id == tenant_id).values(webhook_secret=box.decrypt(sealed))
            )
    with op.batch_alter_table("tenant_policies", schema=None) as batch_op:
        batch_op.drop_column("webhook_secret_encrypted")

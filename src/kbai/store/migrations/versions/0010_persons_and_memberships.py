"""People in several tenants: ``persons`` (email, password), ``users`` becomes the membership table.

Every existing user becomes one person **with the same id** (so ``X-Kbai-User`` of existing tokens does
not change) and one membership (the ``users`` row keeps its id, roles, tokens, sessions and audit rows).
Identities point at persons. Invitations (one-time links to a new membership) get their table.

On SQLite, moving the email off ``users`` means rebuilding that table (a UNIQUE column cannot be dropped in
place). With foreign keys enforced, dropping the old table would cascade into user_roles, sessions,
notifications and tokens, so this migration refuses to run unless they are off:
``Database.upgrade`` (``kbai db upgrade``, ``kbai serve``) turns them off around the migrations and checks
every reference afterwards.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _sqlite_foreign_keys_off() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return False
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0010 rebuilds the users table: run it with SQLite foreign keys off "
            "(kbai db upgrade does), or the rebuild would cascade into roles, tokens and sessions"
        )
    return True


def _identities_to(column: str, table: str, sqlite: bool) -> None:
    """Point ``identities`` at ``table`` through ``column`` (the other of person_id / user_id), values kept."""
    old = "user_id" if column == "person_id" else "person_id"
    if not sqlite:
        op.drop_index(f"ix_identities_{old}", table_name="identities")
        op.drop_constraint(f"identities_{old}_fkey", "identities", type_="foreignkey")
        op.alter_column("identities", old, new_column_name=column)
        op.create_foreign_key(f"identities_{column}_fkey", "identities", table, [column], ["id"], ondelete="CASCADE")
        op.create_index(f"ix_identities_{column}", "identities", [column], unique=False)
        return
    op.drop_index(f"ix_identities_{old}", table_name="identities")
    op.rename_table("identities", "identities_old")
    op.create_table(
        "identities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column(column, sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint([column], [f"{table}.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("issuer", "subject", name="uq_identities_issuer_subject"),
    )
    op.execute(
        f"INSERT INTO identities (id, issuer, subject, {column}, created_at, last_login_at) "
        f"SELECT id, issuer, subject, {old}, created_at, last_login_at FROM identities_old"
    )
    op.drop_table("identities_old")
    op.create_index(f"ix_identities_{column}", "identities", [column], unique=False)


def upgrade() -> None:
    sqlite = _sqlite_foreign_keys_off()
    op.create_table(
        "persons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_tenant_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["last_tenant_id"], ["tenants.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email", name="uq_persons_email"),
    )
    # One person per user, same id. "!..." was the marker of a user without a password (OIDC only).
    op.execute(
        "INSERT INTO persons (id, email, password_hash, created_at, last_tenant_id) "
        "SELECT id, lower(email), CASE WHEN password_hash LIKE '!%' THEN NULL ELSE password_hash END, "
        "created_at, tenant_id FROM users"
    )
    if not sqlite:  # the next person gets a fresh id
        op.execute(
            "SELECT setval(pg_get_serial_sequence('persons', 'id'), COALESCE((SELECT max(id) FROM persons), 0) + 1, false)"
        )

    op.add_column("users", sa.Column("person_id", sa.Integer(), nullable=True))
    op.execute("UPDATE users SET person_id = id")
    with op.batch_alter_table("users", recreate="always" if sqlite else "never") as batch:
        batch.alter_column("person_id", existing_type=sa.Integer(), nullable=False)
        if not sqlite:
            batch.drop_constraint("users_email_key", type_="unique")
        batch.drop_column("email")
        batch.drop_column("password_hash")
        batch.create_foreign_key("fk_users_person_id", "persons", ["person_id"], ["id"])
        batch.create_unique_constraint("uq_users_tenant_person", ["tenant_id", "person_id"])
        batch.create_index("ix_users_person_id", ["person_id"], unique=False)

    # (person id = user id, so the values stay right; the reference now names persons)
    _identities_to("person_id", "persons", sqlite)

    op.create_table(
        "invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest", name="uq_invitations_digest"),
    )
    op.create_index("ix_invitations_user_id", "invitations", ["user_id"], unique=False)


def downgrade() -> None:
    sqlite = _sqlite_foreign_keys_off()
    bind = op.get_bind()
    shared = bind.execute(
        sa.text("SELECT count(*) FROM (SELECT person_id FROM users GROUP BY person_id HAVING count(*) > 1) AS many")
    ).scalar()
    if shared:
        raise RuntimeError(
            f"cannot downgrade below 0010: {shared} people belong to several tenants, and before "
            "0010 an email belonged to one tenant only"
        )
    op.drop_index("ix_invitations_user_id", table_name="invitations")
    op.drop_table("invitations")

    # Back to the membership of each person (one each, checked above).
    op.execute("UPDATE identities SET person_id = (SELECT u.id FROM users u WHERE u.person_id = identities.person_id)")
    _identities_to("user_id", "users", sqlite)

    op.add_column("users", sa.Column("email", sa.String(length=254), nullable=True))
    op.add_column("users", sa.Column("password_hash", sa.String(length=200), nullable=True))
    op.execute(
        "UPDATE users SET email = (SELECT p.email FROM persons p WHERE p.id = users.person_id), "
        "password_hash = (SELECT COALESCE(p.password_hash, '!oidc') FROM persons p WHERE p.id = users.person_id)"
    )
    with op.batch_alter_table("users", recreate="always" if sqlite else "never") as batch:
        batch.drop_index("ix_users_person_id")
        batch.drop_constraint("uq_users_tenant_person", type_="unique")
        batch.drop_constraint("fk_users_person_id", type_="foreignkey")
        batch.drop_column("person_id")
        batch.alter_column("email", existing_type=sa.String(length=254), nullable=False)
        batch.alter_column("password_hash", existing_type=sa.String(length=200), nullable=False)
        batch.create_unique_constraint("users_email_key", ["email"])
    op.drop_table("persons")

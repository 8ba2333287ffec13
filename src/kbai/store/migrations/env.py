"""Alembic environment: runs on the connection ``Database.upgrade`` hands it, or on KBAI_DATABASE_URL."""

from alembic import context

from kbai.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # `alembic` command line, for writing new migrations
    from kbai.config import get_settings
    from kbai.store.db import Database

    db = Database(get_settings().database_url)
    with db.write_engine.begin() as conn:
        _run(conn)

"""Storage: the only package that knows about SQL.

``models`` declares the tables (SQLAlchemy 2 typed ORM), ``db`` owns the engine and hands out
read and write sessions (writes on SQLite take the database write lock up front with
``BEGIN IMMEDIATE``, on PostgreSQL they lock the rows they serialize on) and runs single
statements outside any transaction (``read_once``: a cold verification is one round trip, compiled
once and sent straight to the driver by ``DirectRead``),
``queries`` holds the hot path's statements, built once, and ``migrations``
holds the Alembic environment that creates and upgrades the schema on both backends. Times are
stored as naive UTC and come back timezone-aware.
"""

from kbai.store.db import Database

__all__ = ["Database"]

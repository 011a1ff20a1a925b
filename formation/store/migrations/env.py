"""Alembic environment of the store: runs on the connection :mod:`formation.store.migrate` hands over.

There is no ``alembic.ini``: the caller puts an open connection in ``config.attributes["connection"]`` (or a URL
in the ``sqlalchemy.url`` main option) and the target metadata is formation's own tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from formation.store.engine import make_engine
from formation.store.migrate import include_name

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite alters most things only by copying the table: autogenerate writes batch operations.
        render_as_batch=True,
        include_name=include_name,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the caller's connection, or one opened on ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("formation's migrations need a connection or a sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("formation's migrations run online only")
run_migrations_online()

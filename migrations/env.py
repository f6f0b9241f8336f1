"""Alembic environment shared by `alembic` in the repo and `archiver db ...`.

The URL comes from the caller (config.attributes["database_url"]), else from the
same place the archiver reads it (ARCHIVER_DATABASE_URL or the SQLite default).
A caller may also hand over an open connection (config.attributes["connection"]).
Imports only the database layer and the models.
"""

from logging.config import fileConfig

from alembic import context

from archiver.config import database_url
from archiver.database import make_engine
from archiver.dialect import compare_type, include_object
from archiver.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None:  # plain `alembic` with alembic.ini: its logging sections
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=compare_type,
        include_object=include_object,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(config.attributes.get("database_url") or database_url())
    try:
        with engine.connect() as conn:
            run_migrations(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_online()

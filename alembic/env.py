"""Alembic environment: migrations run on a connection handed over by the library
(memory.pg.engine.migrate), or on MEMORY_DATABASE_URL when the `alembic` command is used."""

from alembic import context
from sqlalchemy import create_engine

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    from memory.pg import resolve_url

    engine = create_engine(resolve_url(None))
    with engine.connect() as conn:
        context.configure(connection=conn, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()

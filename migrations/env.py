"""Alembic environment: the URL comes from certd (cfg.attributes['url']), never from an ini file."""

from alembic import context
from sqlalchemy import pool
from sqlmodel import SQLModel

import certd.store.all_tables  # noqa: F401  (registers every table on SQLModel.metadata)
from certd.store.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations() -> None:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    engine = make_engine(url, config.attributes.get("store"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()

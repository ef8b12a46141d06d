"""Alembic's environment: the revisions in ``versions/`` against ``DATABASE_URL``.

Online (``alembic upgrade head``): every revision the upgrade runs, their version stamps
included, in one transaction, so an upgrade that fails anywhere leaves the schema and the
version as they were before it (PostgreSQL's DDL is transactional), however many revisions it
spans. A revision that must commit in steps (a backfill in batches) does so
explicitly in an ``autocommit_block``. Offline (``alembic upgrade head --sql``): the same
revisions as SQL on stdout, nothing connected; ``DATABASE_URL`` then only names the dialect.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from app.settings import migration_url, redact
from sqlalchemy import create_engine, exc, pool

# A migration waits at most this long for a lock (ALTER TABLE needs the table to itself): a
# request of the live release holds its locks for milliseconds, but a migration queued behind
# a long transaction would make every later request queue behind it. Failing instead leaves
# the schema as it was; the deploy stops and can be run again.
LOCK_TIMEOUT = "3s"


def database_url() -> str:
    try:
        return migration_url(os.environ)
    except ValueError as error:  # the message alone on stderr, exit status 1
        raise SystemExit(str(error)) from None


def run_offline(url: str) -> None:
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online(url: str) -> None:
    engine = create_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={
            "connect_timeout": 5,
            "application_name": "alembic",
            "options": f"-c lock_timeout={LOCK_TIMEOUT}",
        },
    )
    try:
        connection = engine.connect()
    except exc.OperationalError as error:  # unreachable, refused, bad password: no traceback
        raise SystemExit(f"could not connect to {redact(url)}: {error.orig}".rstrip()) from None
    try:
        with connection:
            context.configure(connection=connection, transaction_per_migration=False)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


def main() -> None:
    config = context.config
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = database_url()
    if context.is_offline_mode():
        run_offline(url)
    else:
        run_online(url)


main()

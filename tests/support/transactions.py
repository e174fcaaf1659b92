"""Making an app's sessions join a test's rolled-back transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.db import Database


@contextmanager
def joined(database: Database, connection) -> Iterator[None]:
    """While inside, `database`'s sessions run in savepoints of `connection`'s transaction
    (their commits are savepoint releases); afterwards they use their own engine again."""
    database.sessionmaker.configure(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield
    finally:
        database.sessionmaker.configure(
            bind=database.engine, join_transaction_mode="conditional_savepoint"
        )

"""What every benchmark needs: a throwaway PostgreSQL database built from the real
migrations, a clock, and a table printer. (Underscored: `python -m bench` skips it.)"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from shared.config import Settings

PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")


@dataclass(frozen=True)
class BenchDatabase:
    name: str

    @property
    def dsn(self) -> str:
        """For raw psycopg connections."""
        return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={self.name}"

    @property
    def url(self) -> str:
        """For SQLAlchemy (and so for the services)."""
        return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.name}"

    def settings(self, **overrides) -> Settings:
        return Settings(database_url=self.url, log_level="WARNING", **overrides)


def _admin() -> psycopg.Connection:
    return psycopg.connect(
        f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres", autocommit=True
    )


@contextmanager
def throwaway_database(prefix: str) -> Iterator[BenchDatabase]:
    """A new database migrated with the real migrations; dropped afterwards, whatever
    happens in between."""
    name = f"studiox_bench_{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        database = BenchDatabase(name)
        _migrate(database)
        yield database
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(database: BenchDatabase) -> None:
    from flask_migrate import upgrade

    from api import create_app

    app = create_app(database.settings())
    with app.app_context():
        upgrade()
    app.extensions["studiox"].db.dispose()


@contextmanager
def timed(results: dict, key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(row, widths, strict=True))
        )
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)

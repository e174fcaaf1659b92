"""Engine and session handling shared by the API, the workers and the CLI.

The boundary that owns a unit of work (an HTTP request, a Celery task run, a CLI command)
opens a session with `session_scope()` or `Database.session()`, and commits once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings


def make_engine(settings: Settings, *, durable: bool = True) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL + a busy timeout let the API, worker and beat processes write the same
            # file without "database is locked" errors.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=10,
        connect_args={
            "connect_timeout": 5,
            # Non-durable connections commit before their WAL reaches the disk (see
            # Database.session_scope).
            **({} if durable else {"options": "-c synchronous_commit=off"}),
        },
        # ...and run each statement as its own transaction: no BEGIN/COMMIT round trips.
        **({} if durable else {"isolation_level": "AUTOCOMMIT"}),
    )
    _ping_idle_connections(engine)
    return engine


# A pooled connection idle for longer than this is pinged before use (recovery by itself
# after PostgreSQL restarts, or after a firewall dropped it). One in use more recently is
# not: a ping on every checkout was one round trip more per unit of work (a fifth of a
# worker's CPU per task, measured). If PostgreSQL restarts within this window, the first
# statement fails instead (503 in the API, a retried or swept task in a worker) and
# SQLAlchemy then discards every connection made before the failure.
PING_IF_IDLE_S = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """SQLAlchemy's documented "pessimistic" disconnect check, made on idle connections
    only: raising DisconnectionError at checkout makes the pool replace the connection."""

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_IF_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError("the pooled connection is gone") from exc


class Database:
    """An engine plus its session factory; one per process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = make_engine(settings)
        self.sessionmaker = sessionmaker(bind=self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessionmaker()

    @cached_property
    def _relaxed_engine(self) -> Engine:
        if self.settings.is_sqlite:
            return self.engine
        return make_engine(self.settings, durable=False)

    @cached_property
    def _single_statement_engine(self) -> Engine:
        if self.settings.is_sqlite:
            return self.engine
        # Same pool as the durable engine; the option only switches psycopg's
        # autocommit flag on checkout (no round trip).
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def session_scope(
        self, *, durable: bool = True, single_statement: bool = False
    ) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error.

        `single_statement=True` is for one statement that is atomic on its own (a
        worker's successful finish): it commits durably by itself, without the
        BEGIN/COMMIT round trips around it.

        `durable=False` is for single statements whose loss in a database crash is
        harmless (a worker's claim, progress, lease renewals): each statement commits on
        its own (autocommit) without waiting for the disk; PostgreSQL stays consistent,
        the write may just be forgotten.

        Neither is for anything that moves credits or needs several statements to be
        atomic: each statement would commit alone. All three come from the one
        sessionmaker, so what is installed on it (the outbox) applies to each.
        """
        if not durable:
            session = self.sessionmaker(bind=self._relaxed_engine)
        elif single_statement:
            session = self.sessionmaker(bind=self._single_statement_engine)
        else:
            session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
        relaxed = self.__dict__.pop("_relaxed_engine", None)
        if relaxed is not None and relaxed is not self.engine:
            relaxed.dispose()
        self.__dict__.pop("_single_statement_engine", None)

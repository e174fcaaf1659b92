"""Resilience fixtures: servers of the test's own (which it may stop), and the audit.

Every scenario ends with the credits audit (invariant 1); the shared PostgreSQL on 5432
and Redis on 6379 are never stopped.
"""

from __future__ import annotations

import pytest
from flask_migrate import upgrade

from shared.credits import service as credits
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for  # noqa: F401  (re-exported for the tests here)


@pytest.fixture()
def own_redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_postgres():
    """A cluster of our own, migrated with the real migrations."""
    server = PostgresServer().init().start().create_database()
    try:
        yield server
    finally:
        server.destroy()


def migrate(app) -> None:
    with app.app_context():
        upgrade()


def assert_audit_clean(database) -> None:
    with database.session_scope() as session:
        assert credits.audit(session) == []

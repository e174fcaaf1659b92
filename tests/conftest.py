"""Fixtures: a throwaway PostgreSQL database built from the real migrations, a Redis
database of our own, the app, and per-test isolation.

Two ways to isolate a test:
- `client` / `db_session`: everything the test and the app do runs inside one outer
  transaction that is rolled back afterwards (commits become savepoints);
- `committed`: for tests whose work must really commit (threads, a real worker); the
  tables are emptied afterwards.
"""

from __future__ import annotations

import pytest
from flask_migrate import upgrade
from sqlalchemy import text

from shared.config import Settings
from tests.support import services
from tests.support.transactions import joined

TABLES = ("credit_ledger", "tasks", "purchases", "stripe_events", "api_keys", "users")


def pytest_sessionstart(session):
    missing = [
        name
        for name, host, port in (
            ("PostgreSQL", services.PG_HOST, services.PG_PORT),
            ("Redis", services.REDIS_HOST, services.REDIS_PORT),
        )
        if not services.reachable(host, port)
    ]
    if missing:
        pytest.exit(
            f"{' and '.join(missing)} not reachable on 127.0.0.1 "
            f"(PostgreSQL :{services.PG_PORT}, Redis :{services.REDIS_PORT}); start them "
            "(see README, 'Testing') and run again.",
            returncode=3,
        )


@pytest.fixture(scope="session")
def database_name():
    name = services.create_database()
    yield name
    services.drop_database(name)


@pytest.fixture(scope="session")
def redis_slot():
    slot = services.RedisSlot()
    yield slot
    slot.release()


@pytest.fixture(scope="session")
def settings(database_name, redis_slot, tmp_path_factory) -> Settings:
    return Settings(
        database_url=services.sqlalchemy_url(database_name),
        broker_url=redis_slot.url,
        auth_mode="dev",
        dev_jwt_secret="test-secret-for-hs256-tokens-0123456789",
        storage_url=f"file://{tmp_path_factory.mktemp('artifacts')}",
        log_level="WARNING",
        task_type_plugins=("tests.support.task_types",),
        db_pool_size=20,
        db_max_overflow=40,
    )


@pytest.fixture(scope="session")
def app(settings):
    from api import create_app

    app = create_app(settings)
    app.config["TESTING"] = True
    with app.app_context():
        upgrade()  # the real migrations, not create_all
    return app


@pytest.fixture(scope="session")
def database(app):
    return app.extensions["studiox"].db


@pytest.fixture()
def sent(app):
    """Outbox messages the app sent (instead of the broker)."""
    ext = app.extensions["studiox"]
    messages, original = [], ext.send
    ext.send = messages.append
    yield messages
    ext.send = original


@pytest.fixture()
def db_session(app, database, sent):
    """A session inside an outer transaction that is rolled back after the test; the
    app's own sessions join the same transaction."""
    connection = database.engine.connect()
    outer = connection.begin()
    try:
        with joined(database, connection):
            session = database.sessionmaker()
            try:
                yield session
            finally:
                session.close()
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture()
def joined_app(db_session):
    """Build another app (other settings) whose sessions join the test's transaction:
    `joined_app(settings.with_(...))`."""
    from contextlib import ExitStack

    from api import create_app

    with ExitStack() as stack:

        def make(app_settings):
            other = create_app(app_settings)
            database = other.extensions["studiox"].db
            stack.callback(database.dispose)
            stack.enter_context(joined(database, db_session.get_bind()))
            return other

        yield make


@pytest.fixture()
def client(app, db_session):
    return app.test_client()


@pytest.fixture()
def committed(database):
    """Real commits; every table but `plans` is emptied afterwards."""
    yield database
    with database.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


@pytest.fixture()
def token(settings):
    from api.auth import make_dev_token

    def make(sub: str = "user_test", **claims) -> str:
        return make_dev_token(settings, sub, claims.get("email"), claims.get("name"))

    return make


@pytest.fixture()
def auth(token):
    """Headers for a dev-token caller: `auth("user_a")`."""

    def headers(sub: str = "user_test", **extra) -> dict:
        return {"Authorization": f"Bearer {token(sub)}", **extra}

    return headers

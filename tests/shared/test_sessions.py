"""The three kinds of unit of work `Database.session_scope` hands out (real PostgreSQL):
what each commits, when, and that the outbox sends after each kind's commit."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from shared.accounts.models import User
from shared.base import utcnow
from shared.db import Database
from shared.outbox import Message, install, send_after_commit

KINDS = {
    "transaction": {},
    "single_statement": {"single_statement": True},
    "relaxed": {"durable": False},
}


@pytest.fixture()
def db(settings, committed):
    database = Database(settings)
    sent: list[Message] = []
    install(database.sessionmaker, sent.append)
    database.sent = sent
    yield database
    database.dispose()


def _insert_user(session) -> str:
    clerk_id = f"sess_{uuid.uuid4().hex[:8]}"
    session.add(User(clerk_id=clerk_id, plan_id="free", credits_reset_at=utcnow()))
    session.flush()
    return clerk_id


def _exists(db, clerk_id) -> bool:
    with db.session_scope() as session:
        return session.scalar(select(User.id).where(User.clerk_id == clerk_id)) is not None


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_sends_its_messages_after_commit_and_none_after_an_error(db, kind):
    with db.session_scope(**KINDS[kind]) as session:
        send_after_commit(session, Message(name="ok"))
    with pytest.raises(RuntimeError), db.session_scope(**KINDS[kind]) as session:
        send_after_commit(session, Message(name="dropped"))
        raise RuntimeError("the unit of work failed")
    assert [m.name for m in db.sent] == ["ok"]


def test_a_transaction_rolls_back_everything_on_an_error(db):
    with pytest.raises(RuntimeError), db.session_scope() as session:
        clerk_id = _insert_user(session)
        raise RuntimeError
    assert not _exists(db, clerk_id)


@pytest.mark.parametrize("kind", ["single_statement", "relaxed"])
def test_single_statement_kinds_commit_each_statement_by_itself(db, kind):
    # Why they are only for one self-contained statement: nothing is rolled back.
    with pytest.raises(RuntimeError), db.session_scope(**KINDS[kind]) as session:
        clerk_id = _insert_user(session)
        raise RuntimeError
    assert _exists(db, clerk_id)


def test_only_relaxed_sessions_skip_waiting_for_the_disk(db):
    def synchronous_commit(**kind):
        with db.session_scope(**kind) as session:
            return session.execute(text("SHOW synchronous_commit")).scalar_one()

    assert synchronous_commit() == "on"
    assert synchronous_commit(single_statement=True) == "on"
    assert synchronous_commit(durable=False) == "off"


def _backend_pid(db, **kind) -> int:
    with db.session_scope(**kind) as session:
        return session.scalar(text("SELECT pg_backend_pid()"))


def _terminate(db, pid: int) -> None:
    """Kill a backend from a connection outside the pools under test."""
    admin = create_engine(db.settings.database_url, poolclass=NullPool)
    with admin.begin() as conn:
        assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_a_pooled_connection_killed_while_idle_is_replaced_unnoticed(db, kind, monkeypatch):
    """The pool pings a connection idle past PING_IF_IDLE_S and swaps a dead one for a
    new one: the unit of work never sees the broken connection."""
    first = _backend_pid(db, **KINDS[kind])
    _terminate(db, first)
    monkeypatch.setattr("shared.db.PING_IF_IDLE_S", 0.0)  # every connection counts as idle
    assert _backend_pid(db, **KINDS[kind]) != first


def test_a_connection_killed_just_after_use_fails_once_then_the_pool_recovers(db):
    """Busy connections skip the ping (one round trip less per unit of work): the first
    statement on a dead one fails with a disconnect, and SQLAlchemy then replaces every
    connection of the pool made before it, so the next unit of work succeeds."""
    first = _backend_pid(db)
    _terminate(db, first)
    with pytest.raises(OperationalError):
        _backend_pid(db)
    assert _backend_pid(db) not in (first, None)

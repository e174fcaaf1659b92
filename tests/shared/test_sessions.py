"""The three kinds of unit of work `Database.session_scope` hands out (real PostgreSQL):
what each commits, when, and that the outbox sends after each kind's commit."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text

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

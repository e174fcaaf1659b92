"""The embedded default (`make run`) is SQLite: the PostgreSQL-specific paths (SKIP LOCKED
in the sweeper, JSONB, RETURNING, the set-based credit reset) must degrade to something
that keeps the invariants. Run here on a real SQLite file migrated like production."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask_migrate import upgrade
from sqlalchemy import select, update

from api import create_app
from shared.accounts import service as accounts
from shared.accounts.models import User
from shared.base import iso, utcnow
from shared.config import Settings
from shared.credits import service as credits
from shared.tasks import service as lifecycle
from shared.tasks.models import Task


@pytest.fixture()
def sqlite_app(tmp_path):
    settings = Settings.from_env(
        {
            "STUDIOX_VAR_DIR": str(tmp_path / "var"),
            "TASK_TYPE_PLUGINS": "tests.support.task_types",
            "LOG_LEVEL": "WARNING",
        }
    )
    assert settings.is_sqlite and settings.broker_url.startswith("filesystem://")
    app = create_app(settings)
    with app.app_context():
        upgrade()
    sent = []
    app.extensions["studiox"].send = sent.append  # the messages, instead of the broker
    yield app, sent
    app.extensions["studiox"].db.dispose()


def test_lifecycle_sweeper_and_reset_keep_the_invariants_on_sqlite(sqlite_app):
    app, sent = sqlite_app
    db = app.extensions["studiox"].db
    with db.session_scope() as session:
        user_id, created = accounts.provision(session, "sqlite_user")
    assert created

    with db.session_scope() as session:
        lost = lifecycle.create_task(session, user_id, "echo", {"message": "lost"}).task.id
        died = lifecycle.create_task(session, user_id, "echo", {}).task.id
    assert [m.task_id for m in sent] == [str(lost), str(died)]
    with db.session_scope() as session:
        task = session.get(Task, lost)
        assert task.input["message"] == "lost"  # JSON (not JSONB) round-trips

    # A worker claims one (UPDATE ... RETURNING), then dies: its lease runs out.
    with db.session_scope() as session:
        assert lifecycle.claim_task(session, died, lease_s=60) is not None
        assert lifecycle.claim_task(session, died, lease_s=60) is None  # held: no 2nd claim
    # The other's message was lost by the broker a long time ago.
    later = utcnow() + timedelta(seconds=600)
    sent.clear()
    with db.session_scope() as session:
        result = lifecycle.sweep(session, now=later, requeue_after_s=300)
    assert set(result.requeued) == {lost, died}
    assert sorted(m.task_id for m in sent) == sorted([str(lost), str(died)])

    # Ending tasks: a failure and a cancel are refunded once each.
    with db.session_scope() as session:
        assert lifecycle.fail_task(session, lost, "echo_failed", "no")
        assert not lifecycle.fail_task(session, lost, "echo_failed", "again")
        assert lifecycle.cancel_task(session, user_id, died).canceled_now

    # The monthly reset's portable path: one more task spends a plan credit, then the
    # user's reset date passes; they are reset once, and only once.
    with db.session_scope() as session:
        lifecycle.create_task(session, user_id, "echo", {})
        session.execute(
            update(User)
            .where(User.id == user_id)
            .values(credits_reset_at=utcnow() - timedelta(days=1))
        )
    with db.session_scope() as session:
        assert session.get(User, user_id).plan_credits == 9
        assert credits.reset_due(session) == 1
    with db.session_scope() as session:
        assert credits.reset_due(session) == 0
        user = session.execute(select(User).where(User.id == user_id)).scalar_one()
        assert user.plan_credits == 10
        # SQLite hands back naive UTC datetimes; iso() compares either kind.
        assert iso(user.credits_reset_at) > iso(utcnow())
        assert credits.audit(session) == []

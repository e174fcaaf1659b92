"""The database itself enforces the invariants, even when application code is bypassed."""

from __future__ import annotations

import uuid

import pytest
from flask_migrate import check, downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from api import create_app
from tests.support import services


def _user(session, clerk_id="raw_user", plan=5, purchased=0):
    user_id = uuid.uuid4()
    session.execute(
        text(
            "INSERT INTO users (id, clerk_id, plan_id, plan_credits, purchased_credits, "
            "credits_reset_at, created_at) VALUES (:id, :c, 'free', :p, :q, now(), now())"
        ),
        {"id": user_id, "c": clerk_id, "p": plan, "q": purchased},
    )
    return user_id


def test_a_negative_bucket_is_rejected(db_session):
    user_id = _user(db_session)
    with (
        pytest.raises(IntegrityError, match="plan_credits_non_negative"),
        db_session.begin_nested(),
    ):
        db_session.execute(
            text("UPDATE users SET plan_credits = -1 WHERE id = :id"), {"id": user_id}
        )
    with (
        pytest.raises(IntegrityError, match="purchased_credits_non_negative"),
        db_session.begin_nested(),
    ):
        db_session.execute(
            text("UPDATE users SET purchased_credits = purchased_credits - 1 WHERE id = :id"),
            {"id": user_id},
        )


@pytest.mark.parametrize("reason", ["task_charge", "task_refund"])
def test_a_second_charge_or_refund_for_a_task_is_rejected(db_session, reason):
    user_id = _user(db_session)
    task_id = uuid.uuid4()
    insert = text(
        "INSERT INTO credit_ledger (user_id, delta, bucket, reason, task_id, balance_after, created_at) "
        "VALUES (:u, -1, 'plan', :r, :t, 4, now())"
    )
    db_session.execute(insert, {"u": user_id, "t": task_id, "r": reason})
    with (
        pytest.raises(IntegrityError, match="uq_credit_ledger_task_reason_bucket"),
        db_session.begin_nested(),
    ):
        db_session.execute(insert, {"u": user_id, "t": task_id, "r": reason})


def test_unknown_bucket_and_reason_are_rejected(db_session):
    user_id = _user(db_session)
    for bucket, reason in (("gold", "admin_grant"), ("plan", "because")):
        with pytest.raises(IntegrityError), db_session.begin_nested():
            db_session.execute(
                text(
                    "INSERT INTO credit_ledger (user_id, delta, bucket, reason, balance_after, created_at) "
                    "VALUES (:u, 1, :b, :r, 1, now())"
                ),
                {"u": user_id, "b": bucket, "r": reason},
            )


def test_migration_applies_and_reverses_on_an_empty_database(settings):
    name = services.create_database("studiox_migrate")
    try:
        app = create_app(settings.with_(database_url=services.sqlalchemy_url(name)))
        with app.app_context():
            upgrade()
            check()  # the models and the migrations describe the same schema (exits if not)
            engine = create_engine(services.sqlalchemy_url(name))
            tables = set(inspect(engine).get_table_names())
            assert {"plans", "users", "credit_ledger", "tasks", "stripe_events"} <= tables
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM plans")).scalar() == 3
            downgrade(revision="base")
            assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
            engine.dispose()
        app.extensions["studiox"].db.dispose()
    finally:
        services.drop_database(name)

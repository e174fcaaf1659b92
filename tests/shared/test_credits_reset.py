"""The monthly reset at volume: 100k users, reruns, two runners at once, and the portable
(SQLite) path compared with the PostgreSQL one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

from flask_migrate import upgrade
from sqlalchemy import select, text

from shared.accounts.models import User
from shared.config import PROJECT_ROOT, Settings
from shared.credits import service as credits
from shared.credits.models import CreditLedger
from tests.support.credits import allowances, bulk_users, make_user

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)


def snapshot(session, prefix):
    """{clerk_id: (id, plan_id, plan_credits, purchased_credits, credits_reset_at)}"""
    rows = session.execute(
        select(
            User.clerk_id,
            User.id,
            User.plan_id,
            User.plan_credits,
            User.purchased_credits,
            User.credits_reset_at,
        ).where(User.clerk_id.like(f"{prefix}%"))
    ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def reset_rows_per_user(session) -> dict:
    return dict(
        session.execute(
            select(CreditLedger.user_id, text("count(*)"))
            .where(CreditLedger.reason == "monthly_reset")
            .group_by(CreditLedger.user_id)
        ).all()
    )


def reset_until_done(database, now=None, batch_size=10_000) -> int:
    """What the beat job and the CLI do: one committed batch after another until done."""
    total = 0
    while True:
        with database.session_scope() as session:
            done = credits.reset_due(session, now=now, batch_size=batch_size)
        total += done
        if done < batch_size:
            return total


def test_reset_100k_users_in_one_run(committed):
    # 100k users: reset dates from 3.5 months before NOW to 5 days after it, one per
    # 11 hours over 111 days, so many land on month ends (29th-31st) and late hours.
    start = NOW - timedelta(days=106)
    with committed.session_scope() as session:
        bulk_users(
            session, 100_000, prefix="bulk_", base=start, step=timedelta(hours=11), cycle=242
        )
        allowance = allowances(session)
        before = snapshot(session, "bulk_")
        ledger_before = session.execute(text("SELECT count(*) FROM credit_ledger")).scalar()
    due = {k for k, v in before.items() if v[4] <= NOW}
    assert 90_000 < len(due) < 100_000  # most are due, some are not

    assert reset_until_done(committed, now=NOW, batch_size=25_000) == len(due)

    with committed.session_scope() as session:
        after = snapshot(session, "bulk_")
        per_user = reset_rows_per_user(session)
        for clerk_id, (user_id, plan_id, _, purchased, reset_at) in before.items():
            if clerk_id in due:
                expected_next = credits.next_reset_after(reset_at, NOW)
                assert after[clerk_id] == (
                    user_id,
                    plan_id,
                    allowance[plan_id],
                    purchased,
                    expected_next,
                ), clerk_id
                assert expected_next > NOW
                assert per_user[user_id] == 1
            else:  # not yet due: untouched, no ledger row
                assert after[clerk_id] == before[clerk_id], clerk_id
                assert user_id not in per_user
        # A user overdue by three months moves to the first future date, same day.
        overdue = {k: v[4] for k, v in before.items() if v[4] < NOW - timedelta(days=92)}
        assert len(overdue) > 1000
        for clerk_id, reset_at in overdue.items():
            moved = after[clerk_id][4]
            assert moved.day == reset_at.day or reset_at.day > 28
            assert NOW < moved <= NOW + timedelta(days=31)
        ledger_after = session.execute(text("SELECT count(*) FROM credit_ledger")).scalar()
        assert ledger_after == ledger_before + len(due)
        assert credits.audit(session) == []

    # Running it again (the next beat tick) finds nobody due and changes nothing.
    assert reset_until_done(committed, now=NOW, batch_size=25_000) == 0
    with committed.session_scope() as session:
        assert snapshot(session, "bulk_") == after
        assert session.execute(text("SELECT count(*) FROM credit_ledger")).scalar() == ledger_after


def test_two_runners_at_once_reset_each_user_exactly_once(committed):
    """Two beat processes firing together: SKIP LOCKED splits the work between them."""
    with committed.session_scope() as session:
        bulk_users(
            session,
            40_000,
            prefix="pair_",
            base=NOW - timedelta(days=40),
            step=timedelta(hours=1),
            cycle=24 * 50,
        )
        before = snapshot(session, "pair_")
    due = {v[0] for v in before.values() if v[4] <= NOW}

    totals, errors = [], []
    start = threading.Barrier(2)

    def runner():
        try:
            start.wait(timeout=10)
            # Small batches: many short transactions, so the two really interleave.
            totals.append(reset_until_done(committed, now=NOW, batch_size=500))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sum(totals) == len(due)
    assert all(total > 0 for total in totals), totals  # both took a share
    with committed.session_scope() as session:
        per_user = reset_rows_per_user(session)
        assert set(per_user) == due
        assert set(per_user.values()) == {1}
        assert credits.audit(session) == []


def test_two_cli_processes_at_once_reset_each_user_exactly_once(committed, settings):
    """`flask credits reset-due` run twice at the same moment, as two real processes."""
    now = datetime.now(UTC)
    with committed.session_scope() as session:
        # Due between 2 and 20 days ago, at hours that cannot cross "now" while this runs.
        bulk_users(
            session,
            20_000,
            prefix="cli_",
            base=now - timedelta(days=20),
            step=timedelta(minutes=77),
            cycle=18 * 24 * 60 // 77,
        )
        make_user(session, plan_credits=4, reset_at=now + timedelta(days=3), clerk_id="cli_later")
        before = snapshot(session, "cli_")
    due = {v[0] for k, v in before.items() if k != "cli_later"}

    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "CELERY_BROKER_URL": settings.broker_url,
        "LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "api",
        "credits",
        "reset-due",
        "--batch-size",
        "500",
    ]
    runners = [
        subprocess.Popen(
            command,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [runner.communicate(timeout=120) for runner in runners]

    assert [runner.returncode for runner in runners] == [0, 0], outputs
    counts = [int(out.split()[1]) for out, _ in outputs]  # "reset N users"
    assert sum(counts) == len(due), outputs
    with committed.session_scope() as session:
        per_user = reset_rows_per_user(session)
        assert set(per_user) == due
        assert set(per_user.values()) == {1}
        after = snapshot(session, "cli_")
        assert after["cli_later"] == before["cli_later"]
        allowance = allowances(session)
        for clerk_id, (user_id, plan_id, _, purchased, reset_at) in before.items():
            if user_id in due:
                assert after[clerk_id][2:4] == (allowance[plan_id], purchased)
                assert after[clerk_id][4] == credits.add_months(reset_at, 1)
        assert credits.audit(session) == []


def test_portable_sqlite_path_gives_the_same_results(tmp_path, db_session):
    """The embedded (SQLite) reset follows the same rules as the PostgreSQL statement."""
    from api import create_app

    now = datetime(2025, 3, 30, 12, 0, tzinfo=UTC)
    people = [  # clerk id, plan, plan credits, purchased, reset date
        ("p_free", "free", 3, 5, datetime(2025, 3, 1, 8, tzinfo=UTC)),
        ("p_pro", "pro", 0, 0, datetime(2025, 3, 30, 11, tzinfo=UTC)),
        ("p_ent", "enterprise", 6000, 2, datetime(2025, 2, 28, 23, tzinfo=UTC)),
        ("p_overdue", "pro", 1, 1, datetime(2024, 12, 20, 0, tzinfo=UTC)),
        ("p_overdue_end", "pro", 1, 1, datetime(2024, 12, 31, 0, tzinfo=UTC)),
        ("p_monthend", "free", 10, 0, datetime(2025, 1, 31, 13, tzinfo=UTC)),
        ("p_later", "free", 2, 1, datetime(2025, 3, 30, 13, tzinfo=UTC)),
        # Clamped to Feb 28, anchored on Jan 31: back to the 31st.
        ("p_anchored", "free", 0, 0, datetime(2025, 2, 28, 9, tzinfo=UTC)),
    ]
    anchors = {"p_anchored": datetime(2025, 1, 31, 9, tzinfo=UTC)}
    sqlite_settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'studiox.db'}",
        broker_url=f"filesystem://{tmp_path / 'broker'}",
        log_level="WARNING",
    )
    sqlite_app = create_app(sqlite_settings)
    with sqlite_app.app_context():
        upgrade()
    sqlite_db = sqlite_app.extensions["studiox"].db

    def run(session):
        ids = {}
        for clerk_id, plan_id, plan, purchased, reset_at in people:
            ids[clerk_id] = make_user(
                session,
                plan_credits=plan,
                purchased_credits=purchased,
                plan_id=plan_id,
                reset_at=reset_at,
                anchor=anchors.get(clerk_id),
                clerk_id=clerk_id,
            )
        session.flush()
        done = credits.reset_due(session, now=now)
        results = {}
        for clerk_id, user_id in ids.items():
            user = session.execute(
                select(User.plan_credits, User.purchased_credits, User.credits_reset_at).where(
                    User.id == user_id
                )
            ).one()
            rows = session.execute(
                select(CreditLedger.bucket, CreditLedger.delta, CreditLedger.balance_after).where(
                    CreditLedger.user_id == user_id, CreditLedger.reason == "monthly_reset"
                )
            ).all()
            reset_at = user[2] if user[2].tzinfo else user[2].replace(tzinfo=UTC)
            results[clerk_id] = (user[0], user[1], reset_at, [tuple(r) for r in rows])
        assert credits.audit(session) == []
        assert credits.reset_due(session, now=now) == 0  # idempotent on both paths
        return done, results

    try:
        with sqlite_db.session_scope() as session:
            sqlite_done, sqlite_results = run(session)
    finally:
        sqlite_db.dispose()
    pg_done, pg_results = run(db_session)

    assert sqlite_done == pg_done == 7
    assert sqlite_results == pg_results
    assert pg_results["p_free"] == (10, 5, datetime(2025, 4, 1, 8, tzinfo=UTC), [("plan", 7, 15)])
    assert pg_results["p_overdue"][2] == datetime(2025, 4, 20, 0, tzinfo=UTC)
    assert pg_results["p_overdue_end"][2] == datetime(2025, 3, 31, 0, tzinfo=UTC)
    assert pg_results["p_monthend"][2] == datetime(2025, 3, 31, 13, tzinfo=UTC)
    assert pg_results["p_anchored"][2] == datetime(2025, 3, 31, 9, tzinfo=UTC)
    assert pg_results["p_later"] == (2, 1, datetime(2025, 3, 30, 13, tzinfo=UTC), [])

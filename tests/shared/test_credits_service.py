"""The ledger service, one operation at a time, against real PostgreSQL (rolled back)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shared.accounts.service import provision
from shared.credits import service as credits
from shared.errors import InsufficientCredits, NotFound, ValidationFailed
from shared.tasks.models import Task
from tests.support.credits import balance, ledger_rows, make_user, record_task


def charge_with_task(session, user_id, cost):
    task_id = uuid.uuid4()
    change = credits.charge_task(session, user_id, task_id, cost)
    record_task(session, user_id, task_id, change)
    return task_id, change


# --- charges ---------------------------------------------------------------------------


def test_charge_draws_plan_credits_first(db_session):
    user_id = make_user(db_session, plan_credits=5, purchased_credits=10)
    task_id, change = charge_with_task(db_session, user_id, 3)

    assert balance(db_session, user_id) == (2, 10)
    assert (change.plan_delta, change.purchased_delta) == (-3, 0)
    rows = ledger_rows(db_session, user_id, "task_charge")
    assert [(r.bucket, r.delta, r.balance_after, r.task_id) for r in rows] == [
        ("plan", -3, 12, task_id)
    ]


def test_charge_spanning_both_buckets_writes_one_row_per_bucket(db_session):
    user_id = make_user(db_session, plan_credits=2, purchased_credits=10)
    task_id, change = charge_with_task(db_session, user_id, 5)

    assert balance(db_session, user_id) == (0, 7)
    assert (change.plan_delta, change.purchased_delta) == (-2, -3)
    rows = ledger_rows(db_session, user_id, "task_charge")
    # balance_after is the total right after each row: plan first (12 - 2), then purchased.
    assert [(r.bucket, r.delta, r.balance_after) for r in rows] == [
        ("plan", -2, 10),
        ("purchased", -3, 7),
    ]
    assert {r.task_id for r in rows} == {task_id}
    task = db_session.get(Task, task_id)
    assert (task.cost_plan, task.cost_purchased) == (2, 3)
    assert credits.audit(db_session) == []


def test_charge_from_purchased_only_when_plan_is_empty(db_session):
    user_id = make_user(db_session, plan_credits=0, purchased_credits=4)
    _, change = charge_with_task(db_session, user_id, 4)
    assert balance(db_session, user_id) == (0, 0)
    assert (change.plan_delta, change.purchased_delta) == (0, -4)
    rows = ledger_rows(db_session, user_id, "task_charge")
    assert [(r.bucket, r.delta, r.balance_after) for r in rows] == [("purchased", -4, 0)]


def test_insufficient_credits_carries_numbers_and_changes_nothing(db_session):
    user_id = make_user(db_session, plan_credits=2, purchased_credits=1)
    before = ledger_rows(db_session, user_id)

    with pytest.raises(InsufficientCredits) as caught:
        credits.charge_task(db_session, user_id, uuid.uuid4(), 4)

    assert (caught.value.required, caught.value.available) == (4, 3)
    assert caught.value.details == {"required": 4, "available": 3}
    assert balance(db_session, user_id) == (2, 1)
    assert ledger_rows(db_session, user_id) == before


def test_exact_balance_can_be_spent(db_session):
    user_id = make_user(db_session, plan_credits=2, purchased_credits=1)
    charge_with_task(db_session, user_id, 3)
    assert balance(db_session, user_id) == (0, 0)
    with pytest.raises(InsufficientCredits):
        credits.charge_task(db_session, user_id, uuid.uuid4(), 1)


def test_negative_cost_is_refused(db_session):
    user_id = make_user(db_session, plan_credits=2)
    with pytest.raises(ValidationFailed):
        credits.charge_task(db_session, user_id, uuid.uuid4(), -1)
    assert balance(db_session, user_id) == (2, 0)


def test_charge_of_unknown_user_is_not_found(db_session):
    with pytest.raises(NotFound):
        credits.charge_task(db_session, uuid.uuid4(), uuid.uuid4(), 1)


def test_a_task_is_charged_at_most_once_by_constraint(db_session):
    """Invariant 2 is a unique index, not a hope: a second charge of one task fails."""
    user_id = make_user(db_session, plan_credits=10)
    task_id = uuid.uuid4()
    credits.charge_task(db_session, user_id, task_id, 2)
    with pytest.raises(IntegrityError), db_session.begin_nested():
        credits.charge_task(db_session, user_id, task_id, 2)
    assert balance(db_session, user_id) == (8, 0)
    assert len(ledger_rows(db_session, user_id, "task_charge")) == 1


# --- refunds ---------------------------------------------------------------------------


def test_refund_returns_each_part_to_its_bucket(db_session):
    user_id = make_user(db_session, plan_credits=2, purchased_credits=10)
    task_id, _ = charge_with_task(db_session, user_id, 5)
    # Plan credits move on in between (a grant): the refund still returns 2 and 3.
    credits.grant(db_session, user_id, 4, "admin_grant", bucket="plan")

    assert credits.refund_task(db_session, task_id, note="failed") is True

    assert balance(db_session, user_id) == (6, 10)
    rows = ledger_rows(db_session, user_id, "task_refund")
    assert [(r.bucket, r.delta, r.balance_after, r.task_id, r.note) for r in rows] == [
        ("plan", 2, 13, task_id, "failed"),
        ("purchased", 3, 16, task_id, "failed"),
    ]
    assert db_session.get(Task, task_id, populate_existing=True).refunded_at is not None
    assert credits.audit(db_session) == []


def test_refund_happens_at_most_once(db_session):
    user_id = make_user(db_session, plan_credits=3)
    task_id, _ = charge_with_task(db_session, user_id, 3)
    assert credits.refund_task(db_session, task_id) is True
    assert credits.refund_task(db_session, task_id) is False
    assert balance(db_session, user_id) == (3, 0)
    assert len(ledger_rows(db_session, user_id, "task_refund")) == 1


def test_refund_of_unknown_or_free_task_does_nothing(db_session):
    user_id = make_user(db_session, plan_credits=3)
    task_id, _ = charge_with_task(db_session, user_id, 0)
    assert credits.refund_task(db_session, task_id) is False
    assert credits.refund_task(db_session, uuid.uuid4()) is False
    assert ledger_rows(db_session, user_id, "task_refund") == []


# --- grants and claw-backs ---------------------------------------------------------------


def test_grant_goes_to_the_named_bucket(db_session):
    user_id = make_user(db_session)
    credits.grant(db_session, user_id, 7, "admin_grant", note="support ticket 12")
    credits.grant(db_session, user_id, 3, "admin_grant", bucket="plan")
    credits.grant(db_session, user_id, 20, "purchase", stripe_event_id="evt_1")
    assert balance(db_session, user_id) == (3, 27)
    rows = ledger_rows(db_session, user_id)
    assert [(r.reason, r.bucket, r.delta, r.balance_after) for r in rows] == [
        ("admin_grant", "purchased", 7, 7),
        ("admin_grant", "plan", 3, 10),
        ("purchase", "purchased", 20, 30),
    ]
    assert rows[0].note == "support ticket 12"
    assert rows[2].stripe_event_id == "evt_1"


def test_grant_must_be_positive_and_user_must_exist(db_session):
    user_id = make_user(db_session)
    with pytest.raises(ValidationFailed):
        credits.grant(db_session, user_id, 0, "admin_grant")
    with pytest.raises(NotFound):
        credits.grant(db_session, uuid.uuid4(), 5, "admin_grant")
    assert ledger_rows(db_session, user_id) == []


def test_a_stripe_event_grants_at_most_once_by_constraint(db_session):
    user_id = make_user(db_session)
    credits.grant(db_session, user_id, 20, "purchase", stripe_event_id="evt_dup")
    with pytest.raises(IntegrityError), db_session.begin_nested():
        credits.grant(db_session, user_id, 20, "purchase", stripe_event_id="evt_dup")
    assert balance(db_session, user_id) == (0, 20)


@pytest.mark.parametrize(
    ("purchased", "amount", "taken", "left"),
    [(10, 4, 4, 6), (10, 10, 10, 0), (3, 10, 3, 0), (0, 5, 0, 0)],
)
def test_claw_back_never_goes_below_zero(db_session, purchased, amount, taken, left):
    user_id = make_user(db_session, plan_credits=5, purchased_credits=purchased)
    assert credits.claw_back(db_session, user_id, amount, note="dispute") == taken
    # Only purchased credits are clawed back; plan credits are the plan's.
    assert balance(db_session, user_id) == (5, left)
    rows = ledger_rows(db_session, user_id, "chargeback")
    assert [(r.bucket, r.delta) for r in rows] == ([("purchased", -taken)] if taken else [])
    assert credits.audit(db_session) == []


# --- plan changes ------------------------------------------------------------------------


def test_upgrade_tops_plan_credits_up_and_leaves_purchased(db_session):
    user_id = make_user(db_session, plan_credits=3, purchased_credits=9, plan_id="free")
    change = credits.change_plan(db_session, user_id, "pro")

    assert balance(db_session, user_id) == (500, 9)
    assert change.plan_delta == 497
    assert (
        db_session.execute(
            text("SELECT plan_id FROM users WHERE id = :id"), {"id": user_id}
        ).scalar()
        == "pro"
    )
    rows = ledger_rows(db_session, user_id, "plan_change")
    assert [(r.bucket, r.delta, r.balance_after, r.note) for r in rows] == [
        ("plan", 497, 509, "plan -> pro")
    ]
    assert credits.audit(db_session) == []


def test_downgrade_caps_plan_credits_and_leaves_purchased(db_session):
    user_id = make_user(db_session, plan_credits=400, purchased_credits=9, plan_id="pro")
    credits.change_plan(db_session, user_id, "free")
    assert balance(db_session, user_id) == (10, 9)
    rows = ledger_rows(db_session, user_id, "plan_change")
    assert [(r.bucket, r.delta, r.balance_after) for r in rows] == [("plan", -390, 19)]
    assert credits.audit(db_session) == []


def test_downgrade_below_the_cap_changes_no_credits(db_session):
    user_id = make_user(db_session, plan_credits=4, purchased_credits=1, plan_id="pro")
    change = credits.change_plan(db_session, user_id, "free")
    assert balance(db_session, user_id) == (4, 1)
    assert change.plan_delta == 0
    assert ledger_rows(db_session, user_id, "plan_change") == []


def test_upgrade_keeps_plan_credits_already_above_the_allowance(db_session):
    user_id = make_user(db_session, plan_credits=700, plan_id="free")
    credits.change_plan(db_session, user_id, "pro")
    assert balance(db_session, user_id) == (700, 0)


def test_changing_to_the_current_plan_does_not_refill(db_session):
    user_id = make_user(db_session, plan_credits=3, plan_id="pro")
    credits.change_plan(db_session, user_id, "pro")
    assert balance(db_session, user_id) == (3, 0)
    assert ledger_rows(db_session, user_id, "plan_change") == []


def test_plan_change_keeps_the_reset_date(db_session):
    reset_at = datetime(2030, 5, 17, 8, 30, tzinfo=UTC)
    user_id = make_user(db_session, plan_credits=3, reset_at=reset_at)
    credits.change_plan(db_session, user_id, "enterprise")
    stored = db_session.execute(
        text("SELECT credits_reset_at FROM users WHERE id = :id"), {"id": user_id}
    ).scalar()
    assert stored == reset_at


def test_change_to_unknown_plan_is_not_found(db_session):
    user_id = make_user(db_session, plan_credits=3)
    with pytest.raises(NotFound):
        credits.change_plan(db_session, user_id, "platinum")
    assert balance(db_session, user_id) == (3, 0)


# --- audit and ledger listing ----------------------------------------------------------


def test_audit_names_a_user_whose_balance_was_changed_behind_the_ledger(db_session):
    good = make_user(db_session, plan_credits=5)
    bad = make_user(db_session, plan_credits=5, purchased_credits=2)
    assert credits.audit(db_session) == []
    db_session.execute(
        text("UPDATE users SET purchased_credits = purchased_credits + 7 WHERE id = :id"),
        {"id": bad},
    )
    mismatches = credits.audit(db_session)
    assert [(m.user_id, m.plan_credits, m.purchased_credits) for m in mismatches] == [(bad, 5, 9)]
    assert (mismatches[0].ledger_plan, mismatches[0].ledger_purchased) == (5, 2)
    assert good not in {m.user_id for m in mismatches}


def test_audit_catches_a_user_with_credits_and_no_ledger(db_session):
    user_id = make_user(db_session)
    db_session.execute(text("UPDATE users SET plan_credits = 3 WHERE id = :id"), {"id": user_id})
    assert [m.user_id for m in credits.audit(db_session)] == [user_id]


def test_list_ledger_is_newest_first_and_pages(db_session):
    user_id = make_user(db_session)
    for amount in range(1, 6):
        credits.grant(db_session, user_id, amount, "admin_grant")
    page, cursor = credits.list_ledger(db_session, user_id, limit=3)
    assert [r.delta for r in page] == [5, 4, 3]
    page, cursor = credits.list_ledger(db_session, user_id, limit=3, before_id=cursor)
    assert [r.delta for r in page] == [2, 1]
    assert cursor is None


# --- reset date rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        # one month on from the previous date, not from now
        ("2025-03-10 09:00", "2025-03-12 15:00", "2025-04-10 09:00"),
        # overdue by three months: the first future date, same day of month
        ("2024-12-10 09:00", "2025-03-12 15:00", "2025-04-10 09:00"),
        # same day, earlier hour: still this month
        ("2025-01-12 18:00", "2025-03-12 15:00", "2025-03-12 18:00"),
        # month ends clamp (Jan 31 -> Feb 28), never onto a date already passed
        ("2025-01-31 00:00", "2025-02-28 12:00", "2025-03-31 00:00"),
        ("2025-01-30 10:00", "2025-02-27 12:00", "2025-02-28 10:00"),
        ("2024-01-31 00:00", "2024-02-10 00:00", "2024-02-29 00:00"),
        # exactly due
        ("2025-06-15 00:00", "2025-06-15 00:00", "2025-07-15 00:00"),
    ],
)
def test_next_reset_after(previous, now, expected):
    def parse(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    assert credits.next_reset_after(parse(previous), parse(now)) == parse(expected)


def test_postgresql_reset_dates_follow_the_python_rule_on_month_ends(db_session):
    """The set-based SQL and `next_reset_after` agree, month ends and leap years included.

    (The first version used `age()`, which put a Jan 29-31 user's next date on Feb 28
    before "now": the user stayed due and was reset twice.)
    """
    now = datetime(2023, 2, 28, 22, 30, tzinfo=UTC)
    previous = []
    for year, month in ((2022, 11), (2022, 12), (2023, 1), (2023, 2)):
        for day in (1, 15, 27, 28, 29, 30, 31):
            for hour in (0, 22, 23):
                with contextlib.suppress(ValueError):  # Nov 31, Feb 29-31
                    previous.append(datetime(year, month, day, hour, tzinfo=UTC))
    users_by_date = {make_user(db_session, reset_at=at): at for at in previous}

    due = sum(at <= now for at in previous)
    assert due == len(previous) - 1  # only Feb 28 23:00 is still ahead
    assert credits.reset_due(db_session, now=now, batch_size=10_000) == due
    stored = dict(
        db_session.execute(
            text("SELECT id, credits_reset_at FROM users WHERE id = ANY(:ids)"),
            {"ids": list(users_by_date)},
        ).all()
    )
    for user_id, at in users_by_date.items():
        expected = credits.next_reset_after(at, now) if at <= now else at
        assert stored[user_id] == expected, at
        assert stored[user_id] > now
    # Nobody is left due, so a second run does nothing.
    assert credits.reset_due(db_session, now=now) == 0


def _reset_dates(db_session, user_id, nows) -> list[datetime]:
    """The next reset date after a reset run at each of `nows` in turn."""
    dates = []
    for now in nows:
        assert credits.reset_due(db_session, now=now) == 1, now
        dates.append(
            db_session.execute(
                text("SELECT credits_reset_at FROM users WHERE id = :id"), {"id": user_id}
            ).scalar_one()
        )
    return dates


def at(month: int, day: int, year: int = 2025) -> datetime:
    return datetime(year, month, day, 13, 0, tzinfo=UTC)


def test_a_month_end_reset_day_comes_back_after_a_short_month(db_session):
    """Signed up on Jan 31: resets on Feb 28, then Mar 31, Apr 30, May 31 (the 31st is
    remembered, not replaced by the clamped 28th)."""
    user_id = make_user(db_session, plan_credits=1, reset_at=at(2, 28), anchor=at(1, 31))
    nows = [at(3, 1), at(4, 1), at(5, 1)]
    assert _reset_dates(db_session, user_id, nows) == [at(3, 31), at(4, 30), at(5, 31)]


def test_a_user_without_an_anchor_is_anchored_on_the_first_reset(db_session):
    """Rows from before the anchor count from their reset date, which then becomes it."""
    user_id = make_user(db_session, plan_credits=1, reset_at=at(1, 31))
    dates = _reset_dates(db_session, user_id, [at(2, 1), at(3, 1), at(4, 1)])
    assert dates == [at(2, 28), at(3, 31), at(4, 30)]
    anchor = db_session.execute(
        text("SELECT credits_reset_anchor FROM users WHERE id = :id"), {"id": user_id}
    ).scalar_one()
    assert anchor == at(1, 31)


def test_sign_up_anchors_the_resets_on_the_sign_up_moment(db_session):
    user_id, created = provision(db_session, "anchor_signup")
    assert created
    row = db_session.execute(
        text("SELECT created_at, credits_reset_anchor, credits_reset_at FROM users WHERE id = :id"),
        {"id": user_id},
    ).one()
    assert row.credits_reset_anchor == row.created_at
    assert row.credits_reset_at == credits.add_months(row.created_at, 1)


def test_reset_refills_plan_credits_only_and_leaves_a_row(db_session):
    now = datetime(2025, 3, 12, tzinfo=UTC)
    spent = make_user(
        db_session,
        plan_credits=3,
        purchased_credits=8,
        plan_id="pro",
        reset_at=datetime(2025, 3, 1, tzinfo=UTC),
    )
    # Plan credits above the allowance (an operator's plan grant): no rollover, back to 10.
    over = make_user(db_session, plan_credits=25, reset_at=datetime(2025, 3, 1, tzinfo=UTC))
    full = make_user(db_session, plan_credits=10, reset_at=datetime(2025, 3, 1, tzinfo=UTC))

    assert credits.reset_due(db_session, now=now) == 3

    assert balance(db_session, spent) == (500, 8)
    assert balance(db_session, over) == (10, 0)
    assert balance(db_session, full) == (10, 0)
    rows = {
        user_id: [
            (r.bucket, r.delta, r.balance_after, r.created_at)
            for r in ledger_rows(db_session, user_id, "monthly_reset")
        ]
        for user_id in (spent, over, full)
    }
    assert rows == {
        spent: [("plan", 497, 508, now)],
        over: [("plan", -15, 10, now)],
        full: [("plan", 0, 10, now)],  # nothing moved, but the reset is on record
    }
    assert credits.audit(db_session) == []

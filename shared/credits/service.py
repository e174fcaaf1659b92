"""The one place that moves credits.

Every function takes the caller's `Session`, changes balances and writes the matching
ledger rows in that session's transaction, and never commits. Invariants kept here:

1. `plan_credits + purchased_credits` always equals the sum of the user's ledger deltas
   (per bucket, too), and no bucket goes negative (CHECK constraints back this up).
2. A task is charged at most once and refunded at most once (unique index on
   `credit_ledger (task_id, reason, bucket)`, and `tasks.refunded_at` as the guard).
3. Balances change through one conditional UPDATE per change; nothing is read, decided
   in Python and written back.
"""

from __future__ import annotations

import calendar
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from shared.accounts.models import Plan, User
from shared.base import TZDateTime, utcnow
from shared.credits.models import CreditLedger
from shared.errors import InsufficientCredits, NotFound, ValidationFailed
from shared.tasks.models import Task

users = User.__table__
ledger = CreditLedger.__table__
tasks = Task.__table__
plans = Plan.__table__


@dataclass(frozen=True)
class BalanceChange:
    """Both buckets before and after one change."""

    plan_before: int
    purchased_before: int
    plan_after: int
    purchased_after: int

    @property
    def plan_delta(self) -> int:
        return self.plan_after - self.plan_before

    @property
    def purchased_delta(self) -> int:
        return self.purchased_after - self.purchased_before

    @property
    def total_after(self) -> int:
        return self.plan_after + self.purchased_after


def _smaller(column: ColumnElement, amount: int) -> ColumnElement:
    # LEAST() is not portable to SQLite; CASE is.
    return case((column < amount, column), else_=literal(amount))


def _change_balance(
    session: Session,
    user_id: uuid.UUID,
    plan_value: ColumnElement,
    purchased_value: ColumnElement,
    condition: ColumnElement | None = None,
) -> BalanceChange | None:
    """Set both buckets with SQL expressions of their current values, in one UPDATE.

    Returns the values before and after, or None when the user does not exist or
    `condition` is false. On PostgreSQL the row is locked and read by a sub-select of
    the same UPDATE (UPDATE ... FROM (SELECT ... FOR UPDATE)), so "before" is exactly
    what the UPDATE changed. SQLite has no row locks and cannot RETURNING from a FROM
    table, but it serialises writers: a no-op write takes the database write lock first,
    after which reading "before" and updating cannot interleave with anyone.
    """
    where = [users.c.id == user_id]
    if condition is not None:
        where.append(condition)
    values = {"plan_credits": plan_value, "purchased_credits": purchased_value}

    if session.get_bind().dialect.name == "postgresql":
        old = (
            select(users.c.id, users.c.plan_credits, users.c.purchased_credits)
            .where(users.c.id == user_id)
            .with_for_update()
            .subquery("old")
        )
        stmt = (
            update(users)
            .values(values)
            .where(users.c.id == old.c.id, *where)
            .returning(
                old.c.plan_credits,
                old.c.purchased_credits,
                users.c.plan_credits,
                users.c.purchased_credits,
            )
        )
        row = session.execute(stmt).first()
        return BalanceChange(*row) if row else None

    session.execute(update(users).where(users.c.id == user_id).values(id=users.c.id))
    before = session.execute(
        select(users.c.plan_credits, users.c.purchased_credits).where(*where)
    ).first()
    if before is None:
        return None
    after = session.execute(
        update(users)
        .values(values)
        .where(*where)
        .returning(users.c.plan_credits, users.c.purchased_credits)
    ).one()
    return BalanceChange(before[0], before[1], after[0], after[1])


def _add_to_balance(
    session: Session, user_id: uuid.UUID, plan_add: int, purchased_add: int
) -> BalanceChange | None:
    """Add fixed amounts to both buckets in one plain UPDATE (refunds, grants).

    "Before" is "after" minus what was added, so no sub-select is needed: the row is locked
    once, by the UPDATE itself. (The self-join of `_change_balance` takes the row lock
    twice in one statement, and two transactions that already hold or wait for the row —
    a sweeper refunding several tasks of one user, say — could deadlock on that.)
    """
    row = session.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(
            plan_credits=users.c.plan_credits + plan_add,
            purchased_credits=users.c.purchased_credits + purchased_add,
        )
        .returning(users.c.plan_credits, users.c.purchased_credits)
    ).first()
    if row is None:
        return None
    plan_after, purchased_after = row
    return BalanceChange(plan_after - plan_add, purchased_after - purchased_add, *row)


def _write_ledger(
    session: Session,
    user_id: uuid.UUID,
    change: BalanceChange,
    reason: str,
    *,
    task_id: uuid.UUID | None = None,
    stripe_event_id: str | None = None,
    note: str | None = None,
    always: bool = False,
) -> None:
    """One ledger row per bucket that moved (plan first), each with the total after it.

    `always` writes a plan row even when nothing moved (a monthly reset that found the
    allowance already in place still leaves its mark).
    """
    common = {
        "user_id": user_id,
        "reason": reason,
        "task_id": task_id,
        "stripe_event_id": stripe_event_id,
        "note": note,
        "created_at": utcnow(),
    }
    rows = []
    if change.plan_delta or (always and not change.purchased_delta):
        rows.append(
            {
                **common,
                "bucket": "plan",
                "delta": change.plan_delta,
                "balance_after": change.plan_after + change.purchased_before,
            }
        )
    if change.purchased_delta:
        rows.append(
            {
                **common,
                "bucket": "purchased",
                "delta": change.purchased_delta,
                "balance_after": change.total_after,
            }
        )
    if rows:
        session.execute(insert(ledger), rows)


def available_credits(session: Session, user_id: uuid.UUID) -> int:
    total = session.execute(
        select(users.c.plan_credits + users.c.purchased_credits).where(users.c.id == user_id)
    ).scalar_one_or_none()
    if total is None:
        raise NotFound("No such user.")
    return total


def charge_task(
    session: Session, user_id: uuid.UUID, task_id: uuid.UUID, cost: int
) -> BalanceChange:
    """Take `cost` credits for a task, plan credits first, then purchased.

    One conditional UPDATE (`WHERE plan + purchased >= cost`): N concurrent charges
    against a balance B succeed exactly min(N, B // cost) times. Raises
    InsufficientCredits (and changes nothing) when the balance is short. The caller
    stores the split (`plan_delta`, `purchased_delta`) on the task so a refund can
    return each part to its bucket.
    """
    if cost < 0:
        raise ValidationFailed("A cost cannot be negative.", {"cost": ["Must be >= 0."]})
    from_plan = _smaller(users.c.plan_credits, cost)
    change = _change_balance(
        session,
        user_id,
        users.c.plan_credits - from_plan,
        users.c.purchased_credits - (literal(cost) - from_plan),
        users.c.plan_credits + users.c.purchased_credits >= cost,
    )
    if change is None:
        raise InsufficientCredits(required=cost, available=available_credits(session, user_id))
    _write_ledger(session, user_id, change, "task_charge", task_id=task_id)
    return change


def refund_task(session: Session, task_id: uuid.UUID, note: str | None = None) -> bool:
    """Give a task's charge back, each part to the bucket it came from.

    At most once per task: the conditional `UPDATE tasks SET refunded_at` lets exactly
    one caller through (concurrent callers wait on the row lock and then find it set),
    and the ledger's unique (task_id, reason, bucket) index backs that up. Returns
    whether this call refunded.
    """
    row = session.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.refunded_at.is_(None), tasks.c.cost > 0)
        .values(refunded_at=utcnow())
        .returning(tasks.c.user_id, tasks.c.cost_plan, tasks.c.cost_purchased)
    ).first()
    if row is None:
        return False
    user_id, cost_plan, cost_purchased = row
    change = _add_to_balance(session, user_id, cost_plan, cost_purchased)
    _write_ledger(session, user_id, change, "task_refund", task_id=task_id, note=note)
    return True


def grant(
    session: Session,
    user_id: uuid.UUID,
    amount: int,
    reason: str,
    *,
    bucket: str = "purchased",
    note: str | None = None,
    stripe_event_id: str | None = None,
) -> BalanceChange:
    """Add `amount` (> 0) credits to one bucket: signup, admin grant, purchase."""
    if amount <= 0:
        raise ValidationFailed("A grant must be positive.", {"amount": ["Must be > 0."]})
    plan_add, purchased_add = (amount, 0) if bucket == "plan" else (0, amount)
    change = _add_to_balance(session, user_id, plan_add, purchased_add)
    if change is None:
        raise NotFound("No such user.")
    _write_ledger(session, user_id, change, reason, note=note, stripe_event_id=stripe_event_id)
    return change


def claw_back(
    session: Session,
    user_id: uuid.UUID,
    amount: int,
    reason: str = "chargeback",
    *,
    note: str | None = None,
    stripe_event_id: str | None = None,
) -> int:
    """Take back up to `amount` purchased credits, never below zero. Returns how many."""
    if amount <= 0:
        return 0
    taken = _smaller(users.c.purchased_credits, amount)
    change = _change_balance(
        session, user_id, users.c.plan_credits, users.c.purchased_credits - taken
    )
    if change is None:
        raise NotFound("No such user.")
    _write_ledger(session, user_id, change, reason, note=note, stripe_event_id=stripe_event_id)
    return -change.purchased_delta


def change_plan(
    session: Session,
    user_id: uuid.UUID,
    plan_id: str,
    *,
    stripe_event_id: str | None = None,
) -> BalanceChange:
    """Move a user to `plan_id` and adjust plan credits, with a `plan_change` row.

    An upgrade (a larger allowance) tops plan credits up to the new allowance at once; a
    downgrade caps them at the new allowance; the plan the user is already on changes
    nothing. Purchased credits are never touched, and the reset date stays the user's own.
    """
    allowance = session.execute(
        select(plans.c.monthly_credits).where(plans.c.id == plan_id)
    ).scalar_one_or_none()
    if allowance is None:
        raise NotFound(f"No plan named {plan_id!r}.")
    current_allowance = (
        select(plans.c.monthly_credits).where(plans.c.id == users.c.plan_id).scalar_subquery()
    )
    # Only a real move changes credits: "changing" to the plan the user is already on
    # (a replayed or renewed subscription event) must not refill them for free.
    new_plan_credits = case(
        (users.c.plan_id == plan_id, users.c.plan_credits),
        (
            literal(allowance) >= current_allowance,
            case(
                (users.c.plan_credits < allowance, literal(allowance)), else_=users.c.plan_credits
            ),
        ),
        else_=_smaller(users.c.plan_credits, allowance),
    )
    change = _change_balance(session, user_id, new_plan_credits, users.c.purchased_credits)
    if change is None:
        raise NotFound("No such user.")
    session.execute(update(users).where(users.c.id == user_id).values(plan_id=plan_id))
    _write_ledger(
        session,
        user_id,
        change,
        "plan_change",
        stripe_event_id=stripe_event_id,
        note=f"plan -> {plan_id}",
    )
    return change


def reset_due(session: Session, now: datetime | None = None, batch_size: int = 10_000) -> int:
    """Reset the plan credits of up to `batch_size` users whose reset date has passed.

    Plan credits become the plan's allowance (no rollover; purchased untouched), each
    user gets a `monthly_reset` row, and the next reset date is whole months after the
    user's anchor (`credits_reset_anchor`, else the previous date): dates never drift
    towards "now", nor to the 28th after a February. Set-based: one
    statement per batch on PostgreSQL. Due rows are taken FOR UPDATE SKIP LOCKED, so two
    beat processes running at once split the work and never reset a user twice; a
    second run finds nobody due. Returns how many users were reset; call until 0.
    """
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        return _reset_due_postgresql(session, now, batch_size)
    return _reset_due_portable(session, now, batch_size)


# The date rule is `next_reset_after` in SQL, counted from the anchor (the previous
# date when there is none, which becomes the anchor): m = whole calendar months from the
# anchor's month to now's month; the next date is anchor + m months if that is still in
# the future, else anchor + (m + 1) months. (`age()` is not used: it counts Jan 31 -> Feb 28 as
# 0 months, which gave a "next" date already in the past, and the user was reset twice.)
# Month arithmetic runs on UTC wall-clock time whatever the server's TimeZone is, and
# PostgreSQL clamps the day to the month's length exactly as `add_months` does.
_RESET_SQL = text(
    """
    WITH due AS (
        SELECT u.id, u.plan_credits AS old_plan, u.purchased_credits AS purchased,
               coalesce(u.credits_reset_anchor, u.credits_reset_at) AT TIME ZONE 'UTC'
                   AS anchor_at
        FROM users u
        WHERE u.credits_reset_at <= :now
        ORDER BY u.credits_reset_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    ),
    dated AS (
        SELECT due.*,
               ((extract(year FROM :now_utc) - extract(year FROM anchor_at)) * 12
                + extract(month FROM :now_utc) - extract(month FROM anchor_at))::int AS months
        FROM due
    ),
    reset AS (
        UPDATE users u
        SET plan_credits = p.monthly_credits,
            credits_reset_anchor = dated.anchor_at AT TIME ZONE 'UTC',
            credits_reset_at = (CASE
                WHEN dated.anchor_at + make_interval(months => dated.months) > :now_utc
                    THEN dated.anchor_at + make_interval(months => dated.months)
                ELSE dated.anchor_at + make_interval(months => dated.months + 1)
            END) AT TIME ZONE 'UTC'
        FROM dated, plans p
        WHERE u.id = dated.id AND p.id = u.plan_id
        RETURNING u.id, u.plan_credits, dated.old_plan, dated.purchased
    )
    INSERT INTO credit_ledger (user_id, delta, bucket, reason, balance_after, created_at)
    SELECT id, plan_credits - old_plan, 'plan', 'monthly_reset', plan_credits + purchased, :now
    FROM reset
    """
).bindparams(
    bindparam("now", type_=TZDateTime),
    bindparam("now_utc", type_=DateTime()),
    bindparam("batch", type_=Integer()),
)


def _reset_due_postgresql(session: Session, now: datetime, batch_size: int) -> int:
    now_utc = now.astimezone(UTC).replace(tzinfo=None)
    params = {"now": now, "now_utc": now_utc, "batch": batch_size}
    return session.execute(_RESET_SQL, params).rowcount


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` plus whole calendar months, the day clamped to the month's length."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def next_reset_after(previous: datetime, now: datetime) -> datetime:
    """The first date a whole number of months after `previous` that is after `now`."""
    if previous.tzinfo is None:
        previous = previous.replace(tzinfo=now.tzinfo)
    months = (now.year - previous.year) * 12 + (now.month - previous.month)
    candidate = add_months(previous, max(months, 0))
    while candidate <= now:
        months += 1
        candidate = add_months(previous, months)
    return candidate


def _reset_due_portable(session: Session, now: datetime, batch_size: int) -> int:
    # SQLite (the embedded dev default) has neither SKIP LOCKED nor make_interval; it
    # serialises writers, so a user-by-user batch under the write lock is equally safe.
    # The allowance is read inside the UPDATE (not with the due list), so a plan change
    # between the two statements cannot be overwritten by a stale allowance.
    allowance = (
        select(plans.c.monthly_credits).where(plans.c.id == users.c.plan_id).scalar_subquery()
    )
    due = session.execute(
        select(users.c.id, users.c.credits_reset_at, users.c.credits_reset_anchor)
        .where(users.c.credits_reset_at <= now)
        .order_by(users.c.credits_reset_at)
        .limit(batch_size)
    ).all()
    done = 0
    for user_id, reset_at, anchor in due:
        anchor = anchor or reset_at
        change = _change_balance(
            session,
            user_id,
            allowance,
            users.c.purchased_credits,
            users.c.credits_reset_at == reset_at,
        )
        if change is None:  # someone else reset this user in the meantime
            continue
        session.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(credits_reset_at=next_reset_after(anchor, now), credits_reset_anchor=anchor)
        )
        _write_ledger(session, user_id, change, "monthly_reset", always=True)
        done += 1
    return done


@dataclass(frozen=True)
class AuditMismatch:
    user_id: uuid.UUID
    plan_credits: int
    purchased_credits: int
    ledger_plan: int
    ledger_purchased: int


def audit(session: Session) -> list[AuditMismatch]:
    """Every user whose buckets differ from the sums of their ledger rows (invariant 1).

    One set-based query over all users.
    """
    sums = (
        select(
            ledger.c.user_id,
            func.coalesce(
                func.sum(case((ledger.c.bucket == "plan", ledger.c.delta), else_=0)), 0
            ).label("plan_sum"),
            func.coalesce(
                func.sum(case((ledger.c.bucket == "purchased", ledger.c.delta), else_=0)), 0
            ).label("purchased_sum"),
        )
        .group_by(ledger.c.user_id)
        .subquery()
    )
    plan_sum = func.coalesce(sums.c.plan_sum, 0)
    purchased_sum = func.coalesce(sums.c.purchased_sum, 0)
    rows = session.execute(
        select(users.c.id, users.c.plan_credits, users.c.purchased_credits, plan_sum, purchased_sum)
        .select_from(users.outerjoin(sums, sums.c.user_id == users.c.id))
        .where((users.c.plan_credits != plan_sum) | (users.c.purchased_credits != purchased_sum))
        .order_by(users.c.id)
    ).all()
    return [AuditMismatch(*row) for row in rows]


def list_ledger(
    session: Session, user_id: uuid.UUID, *, limit: int = 20, before_id: int | None = None
) -> tuple[list, int | None]:
    """The user's ledger rows, newest first; returns (rows, id to continue before)."""
    query = select(ledger).where(ledger.c.user_id == user_id)
    if before_id is not None:
        query = query.where(ledger.c.id < before_id)
    rows = session.execute(query.order_by(ledger.c.id.desc()).limit(limit + 1)).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None

"""Property test: any sequence of ledger operations keeps invariant 1.

Hypothesis draws sequences of charge / refund / grant / purchase / reset / plan change /
claw-back for one user. After every step the database must agree with a small model of
the documented policy, `audit()` must be empty, and no bucket may be negative.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from shared.accounts.models import User
from shared.credits import service as credits
from shared.errors import InsufficientCredits
from tests.support.credits import allowances, balance, make_user, record_task

START = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)  # a month end: the date rule's hard case

operations = st.one_of(
    st.tuples(st.just("charge"), st.integers(0, 12)),
    st.tuples(st.just("refund"), st.integers(0, 20)),  # index into the charged tasks
    st.tuples(st.just("grant"), st.integers(1, 40), st.sampled_from(["plan", "purchased"])),
    st.tuples(st.just("purchase"), st.integers(1, 40)),
    st.tuples(st.just("reset"), st.integers(0, 75)),  # days past the due date
    st.tuples(st.just("change_plan"), st.sampled_from(["free", "pro", "enterprise"])),
    st.tuples(st.just("claw_back"), st.integers(0, 50)),
)


@dataclass
class Model:
    """What the balances should be, by the rules in docs/credits.md."""

    plan_id: str
    plan: int
    purchased: int
    reset_at: datetime
    anchor: datetime | None = None  # what resets count from; the first reset sets it
    tasks: list = field(default_factory=list)  # [task_id, from_plan, from_purchased, refunded]


def apply(session, user_id, model: Model, allowance: dict, op: tuple) -> None:
    kind = op[0]
    if kind == "charge":
        cost = op[1]
        task_id = uuid.uuid4()
        if model.plan + model.purchased < cost:
            try:
                credits.charge_task(session, user_id, task_id, cost)
            except InsufficientCredits as exc:
                assert (exc.required, exc.available) == (cost, model.plan + model.purchased)
            else:
                raise AssertionError("a charge beyond the balance went through")
            return
        change = credits.charge_task(session, user_id, task_id, cost)
        record_task(session, user_id, task_id, change)
        from_plan = min(model.plan, cost)
        model.plan -= from_plan
        model.purchased -= cost - from_plan
        model.tasks.append([task_id, from_plan, cost - from_plan, False])
    elif kind == "refund":
        if not model.tasks:
            return
        task = model.tasks[op[1] % len(model.tasks)]
        refunded = credits.refund_task(session, task[0])
        # Free tasks have nothing to refund; any other task exactly once.
        assert refunded == (not task[3] and task[1] + task[2] > 0)
        if refunded:
            model.plan += task[1]
            model.purchased += task[2]
        task[3] = True
    elif kind == "grant":
        credits.grant(session, user_id, op[1], "admin_grant", bucket=op[2])
        if op[2] == "plan":
            model.plan += op[1]
        else:
            model.purchased += op[1]
    elif kind == "purchase":
        credits.grant(session, user_id, op[1], "purchase", stripe_event_id=f"evt_{uuid.uuid4()}")
        model.purchased += op[1]
    elif kind == "reset":
        now = model.reset_at + timedelta(days=op[1])
        assert credits.reset_due(session, now=now) == 1
        model.plan = allowance[model.plan_id]
        model.anchor = model.anchor or model.reset_at
        model.reset_at = credits.next_reset_after(model.anchor, now)
        assert model.reset_at > now
    elif kind == "change_plan":
        new, old = allowance[op[1]], allowance[model.plan_id]
        if op[1] != model.plan_id:
            model.plan = max(model.plan, new) if new >= old else min(model.plan, new)
        credits.change_plan(session, user_id, op[1])
        model.plan_id = op[1]
    elif kind == "claw_back":
        taken = credits.claw_back(session, user_id, op[1])
        assert taken == min(model.purchased, op[1])
        model.purchased -= taken


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    start=st.tuples(st.integers(0, 15), st.integers(0, 15)),
    ops=st.lists(operations, min_size=1, max_size=30),
)
def test_any_sequence_keeps_the_ledger_exact(db_session, start, ops):
    # Each example runs in its own savepoint, rolled back after, so examples never meet.
    savepoint = db_session.begin_nested()
    try:
        allowance = allowances(db_session)
        user_id = make_user(
            db_session, plan_credits=start[0], purchased_credits=start[1], reset_at=START
        )
        model = Model("free", start[0], start[1], START)
        for op in ops:
            apply(db_session, user_id, model, allowance, op)
            plan, purchased = balance(db_session, user_id)
            assert plan >= 0 and purchased >= 0
            assert (plan, purchased) == (model.plan, model.purchased), op
            assert credits.audit(db_session) == [], op
            row = db_session.execute(
                select(User.plan_id, User.credits_reset_at).where(User.id == user_id)
            ).one()
            assert tuple(row) == (model.plan_id, model.reset_at), op
    finally:
        savepoint.rollback()

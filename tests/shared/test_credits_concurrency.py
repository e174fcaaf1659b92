"""Invariant 3 under load: concurrent charges and refunds from separate connections.

Each call runs in its own thread with its own session (its own pooled connection) and
commits, as N API requests or worker runs would. Nothing is mocked: PostgreSQL's row
locks are what is being tested.
"""

from __future__ import annotations

import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from shared.credits import service as credits
from shared.credits.models import CreditLedger
from shared.errors import InsufficientCredits
from tests.support.credits import balance, ledger_rows, make_user, record_task

# Below the test engine's pool (20 + 40 overflow), so every thread holds a real
# connection at once and they all contend on the one user row.
THREADS = 32


def run_concurrently(database, calls):
    """Run every `call(session)` in its own committed session, all threads released at
    once; return each call's result or the exception it raised, in order."""
    # The first wave starts together; later calls start as soon as a thread is free, so
    # THREADS of them are always in flight against the same row.
    start = threading.Barrier(min(THREADS, len(calls)))

    def run(index, call):
        if index < THREADS:
            start.wait(timeout=30)
        try:
            with database.session_scope() as session:
                return call(session)
        except Exception as exc:  # returned, not raised: the test inspects every outcome
            return exc

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(run, range(len(calls)), calls))


def charge(user_id, cost):
    return lambda session: credits.charge_task(session, user_id, uuid.uuid4(), cost)


def test_200_concurrent_charges_against_a_balance_of_50(committed):
    with committed.session_scope() as session:
        user_id = make_user(session, plan_credits=50)

    outcomes = run_concurrently(committed, [charge(user_id, 1) for _ in range(200)])

    accepted = [o for o in outcomes if isinstance(o, credits.BalanceChange)]
    refused = [o for o in outcomes if not isinstance(o, credits.BalanceChange)]
    # No deadlock, serialization or pool error reaches a caller: only "not enough credits".
    assert all(isinstance(o, InsufficientCredits) for o in refused), refused[:3]
    assert len(accepted) == 50
    assert len(refused) == 150
    assert all((o.required, o.available) == (1, 0) for o in refused)
    # Each accepted charge saw a different balance: they really were serialised.
    assert sorted(o.plan_before for o in accepted) == list(range(1, 51))
    with committed.session_scope() as session:
        assert balance(session, user_id) == (0, 0)
        rows = ledger_rows(session, user_id, "task_charge")
        assert len(rows) == 50
        assert sorted(r.balance_after for r in rows) == list(range(50))
        assert credits.audit(session) == []


def test_concurrent_mixed_costs_across_both_buckets(committed):
    with committed.session_scope() as session:
        user_id = make_user(session, plan_credits=30, purchased_credits=41)
    costs = [1, 2, 3, 5] * 50
    random.Random(7).shuffle(costs)

    outcomes = run_concurrently(committed, [charge(user_id, cost) for cost in costs])

    accepted = [
        (c, o) for c, o in zip(costs, outcomes, strict=True) if isinstance(o, credits.BalanceChange)
    ]
    refused = [
        (c, o)
        for c, o in zip(costs, outcomes, strict=True)
        if not isinstance(o, credits.BalanceChange)
    ]
    assert all(isinstance(o, InsufficientCredits) for _, o in refused), refused[:3]
    spent = sum(c for c, _ in accepted)
    with committed.session_scope() as session:
        plan, purchased = balance(session, user_id)
        assert plan + purchased == 71 - spent
        assert plan >= 0 and purchased >= 0
        # Plan first: purchased credits were only touched once plan credits ran out.
        assert plan == 0
        # Every refusal happened when less than its cost was left, and balances only fall.
        assert all(plan + purchased < cost for cost, _ in refused)
        assert all(exc.required == cost and exc.available < cost for cost, exc in refused)
        # Each charge took min(plan, cost) from the plan bucket and the rest from purchased.
        for cost, change in accepted:
            assert -change.plan_delta == min(change.plan_before, cost)
            assert -change.plan_delta - change.purchased_delta == cost
        sums = dict(
            session.execute(
                select(CreditLedger.bucket, func.sum(CreditLedger.delta))
                .where(CreditLedger.user_id == user_id, CreditLedger.reason == "task_charge")
                .group_by(CreditLedger.bucket)
            ).all()
        )
        assert sums == {"plan": -30, "purchased": -(41 - purchased)}
        assert credits.audit(session) == []


def test_concurrent_refunds_of_one_task_land_exactly_once(committed):
    with committed.session_scope() as session:
        user_id = make_user(session, plan_credits=2, purchased_credits=5)
        task_id = uuid.uuid4()
        change = credits.charge_task(session, user_id, task_id, 4)
        record_task(session, user_id, task_id, change)

    outcomes = run_concurrently(
        committed, [lambda s: credits.refund_task(s, task_id) for _ in range(50)]
    )

    assert [o for o in outcomes if not isinstance(o, bool)] == []
    assert outcomes.count(True) == 1
    with committed.session_scope() as session:
        assert balance(session, user_id) == (2, 5)
        rows = ledger_rows(session, user_id, "task_refund")
        assert [(r.bucket, r.delta) for r in rows] == [("plan", 2), ("purchased", 2)]
        assert credits.audit(session) == []


def test_concurrent_charges_refunds_and_grants_keep_the_ledger_exact(committed):
    """Many tasks, each refunded twice at once, interleaved with fresh charges and grants."""
    with committed.session_scope() as session:
        user_id = make_user(session, plan_credits=60, purchased_credits=40)
        task_ids = []
        for _ in range(40):
            task_id = uuid.uuid4()
            record_task(
                session, user_id, task_id, credits.charge_task(session, user_id, task_id, 2)
            )
            task_ids.append(task_id)
    with committed.session_scope() as session:
        assert balance(session, user_id) == (0, 20)

    calls = [lambda s, t=t: credits.refund_task(s, t) for t in task_ids * 2]
    calls += [charge(user_id, 3) for _ in range(40)]
    calls += [lambda s: credits.grant(s, user_id, 1, "admin_grant") for _ in range(20)]
    random.Random(11).shuffle(calls)

    outcomes = run_concurrently(committed, calls)

    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert all(isinstance(o, InsufficientCredits) for o in errors), errors[:3]
    assert outcomes.count(True) == 40  # each task refunded once, of two attempts
    charged = sum(
        isinstance(o, credits.BalanceChange) and o.plan_delta + o.purchased_delta == -3
        for o in outcomes
    )
    with committed.session_scope() as session:
        plan, purchased = balance(session, user_id)
        assert plan + purchased == 20 + 80 + 20 - 3 * charged
        # 30 tasks were paid from plan credits and 10 from purchased: one row each.
        refund_rows = ledger_rows(session, user_id, "task_refund")
        assert sorted((r.bucket, r.delta) for r in refund_rows) == sorted(
            [("plan", 2)] * 30 + [("purchased", 2)] * 10
        )
        refunds = session.execute(
            select(func.count(func.distinct(CreditLedger.task_id))).where(
                CreditLedger.reason == "task_refund"
            )
        ).scalar_one()
        assert refunds == 40
        assert credits.audit(session) == []

"""The lifecycle service directly: claims, leases, the sweeper, refunds exactly once."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from shared.accounts.service import provision
from shared.base import utcnow
from shared.credits import service as credits
from shared.credits.models import CreditLedger
from shared.outbox import pending
from shared.tasks import service as lifecycle
from shared.tasks.models import Task


@pytest.fixture()
def user(db_session):
    user_id, _ = provision(db_session, f"svc_{uuid.uuid4().hex[:8]}")
    credits.grant(db_session, user_id, 90, "admin_grant")  # 10 plan + 90 purchased
    # enterprise runs 20 tasks at once: room for the tests below (credits stay as they are)
    db_session.execute(
        update(credits.users).where(credits.users.c.id == user_id).values(plan_id="enterprise")
    )
    return user_id


def make_task(session, user_id, **input):
    return lifecycle.create_task(session, user_id, "echo", input).task


def refunds(session, task_id):
    return session.execute(
        select(func.count())
        .select_from(CreditLedger)
        .where(CreditLedger.task_id == task_id, CreditLedger.reason == "task_refund")
    ).scalar_one()


def test_create_records_the_split_and_queues_a_message_after_commit(db_session, user):
    task = make_task(db_session, user)
    assert (task.cost, task.cost_plan, task.cost_purchased) == (1, 1, 0)
    assert [m.name for m in pending(db_session)] == ["studiox.run_task"]
    assert pending(db_session)[0].soft_time_limit == 20


def test_charge_takes_plan_first_then_purchased_and_refund_returns_each(db_session, user):
    db_session.execute(
        update(credits.users).where(credits.users.c.id == user).values(plan_credits=2)
    )
    # keep the ledger consistent with the forced balance
    credits._write_ledger(db_session, user, credits.BalanceChange(10, 90, 2, 90), "admin_grant")
    task = lifecycle.create_task(db_session, user, "echo_pricey", {}).task
    assert (task.cost_plan, task.cost_purchased) == (2, 5)
    assert lifecycle.fail_task(db_session, task.id, "x", "y")
    row = db_session.execute(
        select(credits.users.c.plan_credits, credits.users.c.purchased_credits).where(
            credits.users.c.id == user
        )
    ).one()
    assert tuple(row) == (2, 90)
    assert credits.audit(db_session) == []


def test_claim_is_exclusive_until_the_lease_expires(db_session, user):
    task = make_task(db_session, user)
    first = lifecycle.claim_task(db_session, task.id, lease_s=60)
    assert first is not None and first.attempts == 1
    assert lifecycle.claim_task(db_session, task.id, lease_s=60) is None
    db_session.execute(
        update(Task)
        .where(Task.id == task.id)
        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
    )
    again = lifecycle.claim_task(db_session, task.id, lease_s=60)
    assert again is not None and again.attempts == 2


def test_a_finished_task_cannot_be_claimed_or_ended_again(db_session, user):
    task = make_task(db_session, user)
    lifecycle.claim_task(db_session, task.id, 60)
    assert lifecycle.complete_task(db_session, task.id, {"ok": True}) == "succeeded"
    assert lifecycle.claim_task(db_session, task.id, 60) is None
    assert lifecycle.complete_task(db_session, task.id, {"ok": False}) is None
    assert lifecycle.fail_task(db_session, task.id, "late", "too late") is False
    assert refunds(db_session, task.id) == 0


def test_fail_twice_refunds_once(db_session, user):
    task = make_task(db_session, user)
    assert lifecycle.fail_task(db_session, task.id, "a", "first")
    assert not lifecycle.fail_task(db_session, task.id, "b", "second")
    assert not credits.refund_task(db_session, task.id)
    assert refunds(db_session, task.id) == 1
    assert credits.audit(db_session) == []


def test_sweeper_resends_unsent_and_long_waiting_tasks(db_session, user):
    unsent, waiting, fresh = (make_task(db_session, user) for _ in range(3))
    now = utcnow()
    db_session.execute(
        update(Task)
        .where(Task.id == unsent.id)
        .values(enqueued_at=None, created_at=now - timedelta(seconds=30))
    )
    db_session.execute(
        update(Task).where(Task.id == waiting.id).values(enqueued_at=now - timedelta(minutes=10))
    )
    db_session.info.clear()
    result = lifecycle.sweep(db_session, now=now)
    assert set(result.requeued) == {unsent.id, waiting.id}
    assert {m.task_id for m in pending(db_session)} == {str(unsent.id), str(waiting.id)}
    # a second sweep right after finds nothing to do
    db_session.info.clear()
    assert lifecycle.sweep(db_session, now=now).requeued == []


def test_sweeper_requeues_expired_leases_then_fails_and_refunds_past_the_budget(db_session, user):
    task = make_task(db_session, user)
    expired = utcnow() - timedelta(seconds=1)
    for attempt in (1, 2, 3):
        claimed = lifecycle.claim_task(db_session, task.id, 60)
        assert claimed.attempts == attempt
        db_session.execute(update(Task).where(Task.id == task.id).values(lease_expires_at=expired))
        result = lifecycle.sweep(db_session)
        if attempt < 3:
            assert result.requeued == [task.id]
            assert db_session.get(Task, task.id, populate_existing=True).status == "queued"
    assert result.failed == [task.id]
    final = db_session.get(Task, task.id, populate_existing=True)
    assert final.status == "failed" and final.error["code"] == "worker_lost"
    assert refunds(db_session, task.id) == 1
    assert credits.audit(db_session) == []


def test_sweeper_ends_a_dead_workers_canceled_task_as_canceled(db_session, user):
    task = make_task(db_session, user)
    lifecycle.claim_task(db_session, task.id, 60)
    lifecycle.cancel_task(db_session, user, task.id)
    db_session.execute(
        update(Task)
        .where(Task.id == task.id)
        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
    )
    lifecycle.sweep(db_session)
    assert db_session.get(Task, task.id, populate_existing=True).status == "canceled"
    assert refunds(db_session, task.id) == 1


def test_two_sweepers_at_once_act_on_each_task_once(committed):
    with committed.session_scope() as session:
        user_id, _ = provision(session, "sweep_race")
        credits.grant(session, user_id, 500, "admin_grant")
        ids = []
        for _ in range(200):  # parked as succeeded: the plan runs 2 at once
            task = lifecycle.create_task(session, user_id, "echo", {}).task
            ids.append(task.id)
            session.execute(update(Task).where(Task.id == task.id).values(status="succeeded"))
        session.info.clear()
        session.execute(
            update(Task)
            .where(Task.id.in_(ids))
            .values(status="queued", enqueued_at=None, created_at=utcnow() - timedelta(minutes=1))
        )
    results, barrier = [], threading.Barrier(2)

    def sweep():
        with committed.session_scope() as session:
            barrier.wait()
            results.append(lifecycle.sweep(session, batch_size=1000).requeued)
            session.info.clear()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requeued = results[0] + results[1]
    assert sorted(requeued) == sorted(ids)  # every task once, none twice


def _create_concurrently(database, user_id, n, type_name="echo"):
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(n)

    def create(_):
        # An error leaves session_scope, which rolls the unit of work back (as a request
        # or a task run would).
        try:
            with database.session_scope() as session:
                barrier.wait()
                lifecycle.create_task(session, user_id, type_name, {})
                session.info.clear()  # no broker in this test
            return "created"
        except Exception as exc:  # noqa: BLE001  (the kind of refusal is the result)
            return type(exc).__name__

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(create, range(n)))


def test_concurrent_creates_accept_exactly_what_the_balance_allows(committed):
    with committed.session_scope() as session:
        user_id, _ = provision(session, "race_balance")  # 10 plan credits
        credits.grant(session, user_id, 5, "admin_grant")  # + 5 purchased
        session.execute(
            update(credits.users).where(credits.users.c.id == user_id).values(plan_id="enterprise")
        )
    outcomes = _create_concurrently(committed, user_id, 40)
    assert outcomes.count("created") == 15
    assert set(outcomes) == {"created", "InsufficientCredits"}
    with committed.session_scope() as session:
        assert credits.available_credits(session, user_id) == 0
        assert credits.audit(session) == []
        charged = session.execute(
            select(func.count()).select_from(Task).where(Task.user_id == user_id)
        ).scalar()
        assert charged == 15


def test_concurrent_creates_never_overshoot_the_plan_limit(committed):
    with committed.session_scope() as session:
        user_id, _ = provision(session, "race_limit")  # free plan: 2 at once
        credits.grant(session, user_id, 100, "admin_grant")
    outcomes = _create_concurrently(committed, user_id, 20)
    assert outcomes.count("created") == 2
    assert outcomes.count("ConcurrencyLimitReached") == 18
    with committed.session_scope() as session:
        assert credits.available_credits(session, user_id) == 110 - 2
        assert credits.audit(session) == []

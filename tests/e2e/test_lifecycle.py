"""The task lifecycle through the real API, real Redis and a real `celery worker`."""

from __future__ import annotations

import signal
import uuid

from sqlalchemy import select

from shared.credits import service as credits
from shared.credits.models import CreditLedger
from shared.tasks import service as lifecycle
from tests.e2e.conftest import wait_for

TERMINAL = {"succeeded", "failed", "canceled"}


def submit(client, auth, input=None, type="echo", sub="user_test", **headers):
    response = client.post(
        "/api/tasks", json={"type": type, "input": input or {}}, headers=auth(sub, **headers)
    )
    assert response.status_code in (200, 202), response.get_json()
    return response.get_json()


def poll(client, auth, task_id, sub="user_test", timeout=30.0, until=TERMINAL):
    def ended():
        task = client.get(f"/api/tasks/{task_id}", headers=auth(sub)).get_json()
        return task if task["status"] in until else None

    return wait_for(ended, timeout)


def ledger_for(database, task_id):
    with database.session_scope() as session:
        rows = session.execute(
            select(CreditLedger.reason, CreditLedger.bucket, CreditLedger.delta)
            .where(CreditLedger.task_id == uuid.UUID(task_id))
            .order_by(CreditLedger.id)
        ).all()
    return [tuple(r) for r in rows]


def assert_audit_clean(database):
    with database.session_scope() as session:
        assert credits.audit(session) == []


def balance(client, auth, sub="user_test"):
    return client.get("/api/users/credits", headers=auth(sub)).get_json()["total"]


def test_submit_poll_succeeds_with_output_and_right_balance(
    live_client, auth, celery_worker, database
):
    task = submit(live_client, auth, {"message": "hello", "steps": 3})
    done = poll(live_client, auth, task["id"])
    assert done["status"] == "succeeded"
    assert done["output"]["echo"] == "hello"
    assert done["progress"] == 1.0
    assert done["started_at"] and done["completed_at"]
    assert balance(live_client, auth) == 9
    assert ledger_for(database, task["id"]) == [("task_charge", "plan", -1)]
    assert_audit_clean(database)


def test_prefer_wait_returns_the_finished_task(live_client, auth, celery_worker):
    response = live_client.post(
        "/api/tasks",
        json={"type": "echo", "input": {"message": "w"}},
        headers=auth(Prefer="wait=20"),
    )
    assert response.status_code == 200
    assert response.get_json()["status"] == "succeeded"


def test_permanent_error_fails_and_refunds_once(live_client, auth, celery_worker, database):
    task = submit(live_client, auth, {"fail": "permanent"})
    done = poll(live_client, auth, task["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "echo_failed"
    assert balance(live_client, auth) == 10
    assert ledger_for(database, task["id"]) == [
        ("task_charge", "plan", -1),
        ("task_refund", "plan", 1),
    ]
    assert_audit_clean(database)


def test_crashing_handler_fails_with_internal_error_and_refunds(
    live_client, auth, celery_worker, database
):
    task = submit(live_client, auth, {"fail": "crash"})
    done = poll(live_client, auth, task["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "internal_error"
    assert "boom" not in done["error"]["message"]  # no internals leak to the client
    assert balance(live_client, auth) == 10


def test_transient_error_is_retried_then_succeeds(live_client, auth, celery_worker):
    task = submit(live_client, auth, {"fail": "transient_once", "message": "again"})
    done = poll(live_client, auth, task["id"])
    assert done["status"] == "succeeded"
    assert done["output"]["attempt"] == 2
    assert balance(live_client, auth) == 9


def test_exhausted_retries_fail_and_refund_once(live_client, auth, celery_worker, database):
    task = submit(live_client, auth, {"fail": "transient"})
    done = poll(live_client, auth, task["id"], timeout=40)
    assert done["status"] == "failed"
    assert "3 attempts" in done["error"]["message"]
    assert ledger_for(database, task["id"]) == [
        ("task_charge", "plan", -1),
        ("task_refund", "plan", 1),
    ]
    assert_audit_clean(database)


def test_cancel_while_processing_stops_and_refunds(live_client, auth, celery_worker, database):
    task = submit(live_client, auth, {"steps": 200, "step_seconds": 0.05})
    poll(live_client, auth, task["id"], until={"processing"})
    response = live_client.post(f"/api/tasks/{task['id']}/cancel", headers=auth())
    assert response.status_code == 202
    done = poll(live_client, auth, task["id"])
    assert done["status"] == "canceled"
    assert done["progress"] < 1.0
    assert balance(live_client, auth) == 10
    assert ledger_for(database, task["id"]) == [
        ("task_charge", "plan", -1),
        ("task_refund", "plan", 1),
    ]
    assert "canceled" in celery_worker.log()


def test_cancel_racing_completion_ends_in_one_state_with_a_consistent_ledger(
    live_client, auth, celery_worker, database
):
    with database.session_scope() as session:
        from shared.accounts.service import provision

        user_id, _ = provision(session, "racer")
        credits.grant(session, user_id, 100, "admin_grant")
    ids = []
    for i in range(30):
        task = submit(live_client, auth, {"steps": 1, "step_seconds": 0.01 * (i % 5)}, sub="racer")
        live_client.post(f"/api/tasks/{task['id']}/cancel", headers=auth("racer"))
        ids.append(task["id"])
        poll(live_client, auth, task["id"], sub="racer")  # the plan runs 2 at once
    outcomes = {}
    for task_id in ids:
        task = live_client.get(f"/api/tasks/{task_id}", headers=auth("racer")).get_json()
        outcomes[task_id] = task["status"]
        ledger = ledger_for(database, task_id)
        if task["status"] == "succeeded":
            assert ledger == [("task_charge", "plan", -1)]
        else:
            assert task["status"] == "canceled"
            assert sorted(r[0] for r in ledger) == ["task_charge", "task_refund"]
    succeeded = sum(s == "succeeded" for s in outcomes.values())
    assert balance(live_client, auth, "racer") == 110 - succeeded
    assert_audit_clean(database)


def test_worker_killed_mid_task_the_task_still_ends(live_client, auth, start_worker, database):
    first = start_worker()
    task = submit(live_client, auth, {"steps": 40, "step_seconds": 0.05, "message": "survivor"})
    poll(live_client, auth, task["id"], until={"processing"})
    first.kill_all()  # SIGKILL the main process and its children
    second = start_worker()

    # The dead worker's lease (3 s here) runs out; the sweeper hands the task on.
    def swept_and_ended():
        with database.session_scope() as session:
            lifecycle.sweep(session)
        current = live_client.get(f"/api/tasks/{task['id']}", headers=auth()).get_json()
        return current if current["status"] in TERMINAL else None

    done = wait_for(swept_and_ended, timeout=60, interval=0.5)
    assert done["status"] == "succeeded"
    assert done["output"]["attempt"] >= 2
    assert second.proc.poll() is None
    with database.session_scope() as session:
        from shared.tasks.models import Task

        assert session.execute(select(Task).where(Task.status == "processing")).first() is None
    assert balance(live_client, auth) == 9
    assert_audit_clean(database)


def test_worker_child_killed_mid_task_is_redelivered(live_client, auth, celery_worker, database):
    task = submit(live_client, auth, {"steps": 40, "step_seconds": 0.05})
    poll(live_client, auth, task["id"], until={"processing"})
    import os

    for child in celery_worker.children():
        os.kill(child, signal.SIGKILL)

    def ended():
        with database.session_scope() as session:
            lifecycle.sweep(session)
        current = live_client.get(f"/api/tasks/{task['id']}", headers=auth()).get_json()
        return current if current["status"] in TERMINAL else None

    done = wait_for(ended, timeout=60, interval=0.5)
    assert done["status"] == "succeeded"
    assert_audit_clean(database)


def test_request_id_follows_the_task_into_the_worker_log(live_client, auth, celery_worker):
    response = live_client.post(
        "/api/tasks",
        json={"type": "echo", "input": {}},
        headers=auth(**{"X-Request-ID": "trace-me-123"}),
    )
    poll(live_client, auth, response.get_json()["id"])
    wait_for(lambda: "request_id=trace-me-123" in celery_worker.log(), timeout=5)


def test_soft_time_limit_fails_and_refunds(live_client, auth, celery_worker, database):
    task = submit(live_client, auth, {"steps": 1, "step_seconds": 3}, type="echo_short_limit")
    done = poll(live_client, auth, task["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "time_limit"
    assert balance(live_client, auth) == 10
    assert_audit_clean(database)


def test_get_with_prefer_wait_long_polls_until_the_end(live_client, auth, celery_worker):
    task = submit(live_client, auth, {"steps": 5, "step_seconds": 0.1})
    response = live_client.get(f"/api/tasks/{task['id']}", headers=auth(Prefer="wait=20"))
    assert response.status_code == 200
    assert response.get_json()["status"] == "succeeded"

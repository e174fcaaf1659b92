"""SIGTERM to a real `celery worker` mid-task (what `docker stop` and deploys do): the
running task completes (warm shutdown) and the one still queued is run by the next
worker. Nothing is lost, nothing runs twice."""

from __future__ import annotations

import signal

import pytest
from sqlalchemy import select

from shared.credits import service as credits
from shared.tasks.models import Task
from tests.ops.conftest import wait_for
from tests.support import worker as celery_processes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture()
def start_worker(settings, tmp_path):
    started = []

    def start():
        proc = celery_processes.worker(
            settings, tmp_path / f"worker{len(started)}.log", concurrency=1, TASK_LEASE_S=3
        )
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()


def _task(client, auth, task_id):
    return client.get(f"/api/tasks/{task_id}", headers=auth("ops_sigterm")).get_json()


def test_sigterm_during_a_task_finishes_it_and_leaves_the_queue_to_the_next_worker(
    live_client, auth, start_worker, database
):
    first = start_worker()

    def submit(**payload):
        response = live_client.post(
            "/api/tasks", json={"type": "echo", "input": payload}, headers=auth("ops_sigterm")
        )
        assert response.status_code == 202, response.get_json()
        return response.get_json()["id"]

    running = submit(steps=20, step_seconds=0.1, message="running")
    wait_for(
        lambda: _task(live_client, auth, running)["status"] == "processing",
        what="the task to start",
    )
    waiting = submit(message="waiting")  # concurrency 1: this one stays in the broker

    first.signal(signal.SIGTERM)  # the main process only, as docker stop (with init) does
    first.proc.wait(30)
    log = first.log()
    assert "Warm shutdown" in log
    # The task it was running finished before the worker exited: not killed, not lost.
    done = _task(live_client, auth, running)
    assert done["status"] == "succeeded", done
    assert done["output"] == {"echo": "running", "attempt": 1, "pid": done["output"]["pid"]}
    assert _task(live_client, auth, waiting)["status"] == "queued"

    start_worker()
    later = wait_for(
        lambda: (t := _task(live_client, auth, waiting))["status"] in TERMINAL and t,
        timeout=30,
        what="the queued task to run on the next worker",
    )
    assert later["status"] == "succeeded"
    assert later["output"]["attempt"] == 1

    with database.session_scope() as session:
        assert session.execute(select(Task).where(Task.status == "processing")).first() is None
        assert credits.audit(session) == []
    balance = live_client.get("/api/users/credits", headers=auth("ops_sigterm")).get_json()
    assert balance["total"] == 8  # two tasks, each charged once

"""A worker SIGKILLed mid-task, with a real `celery beat` running the sweeper: the task
still ends (succeeded, or failed and refunded) within lease + sweep interval + run time,
and nothing stays `processing` (invariant 4). tests/e2e sweeps by hand; here beat does."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid

import pytest
from sqlalchemy import select

from api import create_app
from api.auth import make_dev_token
from shared.credits.models import CreditLedger
from shared.tasks.models import Task
from tests.resilience.conftest import assert_audit_clean, wait_for
from tests.support import worker as celery_processes

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LEASE_S = 3
SWEEP_S = 1
STEPS, STEP_S = 60, 0.05  # 3 s of work: long enough to be caught mid-task
# Broker delivery, process start-up and a loaded 2-core machine (other suites run at the
# same time): the allowance on top of the documented lease + sweep interval + run time.
SLACK_S = 12
ENV = {"TASK_LEASE_S": LEASE_S, "SWEEP_INTERVAL_S": SWEEP_S}
TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture()
def stack(settings, committed, own_redis, tmp_path):
    """The app and two workers plus beat, all on a Redis of our own."""
    own = settings.with_(broker_url=own_redis.url)
    app = create_app(own)
    started = []
    try:
        for name in ("a", "b"):
            proc = celery_processes.worker(
                own, tmp_path / f"worker-{name}.log", concurrency=1, **ENV
            )
            started.append(proc.start())
        beat = celery_processes.beat(own, tmp_path / "beat.log", tmp_path / "beat-schedule", **ENV)
        started.append(beat.start(ready_marker=None))
        yield app, started[0], started[1], committed
    finally:
        for proc in started:
            proc.stop()
            _kill_leftovers(proc)
        app.extensions["studiox"].db.dispose()


def _kill_leftovers(proc) -> None:
    """Pool children orphaned by a main process we killed live on in its process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.proc.pid, signal.SIGKILL)


def _task(database, task_id: str) -> Task:
    with database.session_scope() as session:
        return session.get(Task, uuid.UUID(task_id))


@pytest.mark.parametrize("what", ["process_group", "main_process"])
def test_killed_worker_the_sweeper_ends_the_task_in_time(stack, what):
    app, worker_a, worker_b, database = stack
    client = app.test_client()
    token = make_dev_token(app.extensions["studiox"].settings, f"kill_{what}")
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post(
        "/api/tasks",
        json={
            "type": "echo",
            "input": {"steps": STEPS, "step_seconds": STEP_S, "message": "survivor"},
        },
        headers=headers,
    )
    assert response.status_code == 202, response.get_json()
    task_id = response.get_json()["id"]

    wait_for(
        lambda: _task(database, task_id).status == "processing",
        timeout=30,
        interval=0.05,
        what="task processing",
    )
    holder = next(
        w
        for w in wait_for(
            lambda: [w for w in (worker_a, worker_b) if task_id in w.log()],
            timeout=10,
            what="a worker log naming the task",
        )
    )
    killed_at = time.monotonic()
    if what == "process_group":
        holder.kill_all()  # main process and pool children: a lost machine or container
    else:
        os.kill(holder.proc.pid, signal.SIGKILL)  # only the main process
        holder.proc.wait(10)

    bound = LEASE_S + SWEEP_S + STEPS * STEP_S + SLACK_S
    ended = wait_for(
        lambda: (t := _task(database, task_id)).status in TERMINAL and t,
        timeout=bound,
        interval=0.1,
        what="task ended after the kill",
    )
    took = time.monotonic() - killed_at
    print(
        f"{what}: {ended.status} after {took:.1f}s (bound {bound:.0f}s), attempts={ended.attempts}"
    )

    assert ended.status in {"succeeded", "failed"}
    with database.session_scope() as session:
        assert session.execute(select(Task.id).where(Task.status == "processing")).first() is None
        ledger = sorted(
            session.execute(
                select(CreditLedger.reason).where(CreditLedger.task_id == ended.id)
            ).scalars()
        )
    if ended.status == "succeeded":
        assert ended.output["echo"] == "survivor"
        assert ledger == ["task_charge"]
    else:
        assert ended.error["code"] == "worker_lost"
        assert ledger == ["task_charge", "task_refund"]
    survivor = worker_b if holder is worker_a else worker_a
    assert survivor.proc.poll() is None
    assert_audit_clean(database)

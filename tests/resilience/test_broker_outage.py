"""The broker stopped for 20 s under a steady stream of submissions, then restarted:
every accepted task ends, nothing is charged without a task, refunds match the failed and
canceled tasks, and the audit passes (invariants 1, 2 and 4).

tests/e2e/test_broker_outage.py submits a handful of tasks with the broker already down;
this one keeps submitting (and canceling) across the moment it goes away and comes back,
and the Redis restart also loses whatever messages it held (no persistence)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select, update

from api import create_app
from api.auth import make_dev_token
from shared.accounts.models import User
from shared.accounts.service import provision
from shared.credits import service as credits
from shared.credits.models import CreditLedger
from shared.tasks.models import Task
from tests.resilience.conftest import assert_audit_clean, wait_for
from tests.support import worker as celery_processes

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

OUTAGE_S = 20
BEFORE_S, AFTER_S = 4, 4
INTERVAL_S = 0.1
USERS = [f"stream_{n}" for n in range(12)]  # spreads the plan's concurrent-task limit
# Short sweeps, and a re-send of messages Redis lost when it restarted, in seconds.
ENV = {"TASK_LEASE_S": 3, "SWEEP_INTERVAL_S": 1, "REQUEUE_AFTER_S": 8}


class Submitter(threading.Thread):
    """POST /api/tasks every ~100 ms (round robin over users); cancels every 7th."""

    def __init__(self, app):
        super().__init__(daemon=True, name="submitter")
        self.client = app.test_client()
        settings = app.extensions["studiox"].settings
        self.headers = [{"Authorization": f"Bearer {make_dev_token(settings, u)}"} for u in USERS]
        self.stop = threading.Event()
        self.statuses: Counter = Counter()
        self.accepted: list[str] = []
        self.latencies: list[tuple[float, float]] = []  # (when, seconds)
        self.errors: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            headers = self.headers[n % len(self.headers)]
            started = time.monotonic()
            try:
                response = self.client.post(
                    "/api/tasks",
                    json={"type": "echo", "input": {"message": str(n)}},
                    headers=headers,
                )
            except Exception as exc:  # the test client re-raises nothing; be safe
                self.errors.append(repr(exc))
                continue
            self.latencies.append((started, time.monotonic() - started))
            self.statuses[response.status_code] += 1
            if response.status_code in (200, 202):
                task_id = response.get_json()["id"]
                self.accepted.append(task_id)
                if n % 7 == 0:
                    cancel = self.client.post(f"/api/tasks/{task_id}/cancel", headers=headers)
                    self.statuses[f"cancel {cancel.status_code}"] += 1
            elif response.status_code >= 500:
                self.errors.append(response.get_data(as_text=True)[:300])
            n += 1
            self.stop.wait(max(0.0, INTERVAL_S - (time.monotonic() - started)))


def test_broker_outage_under_a_stream_of_submissions(settings, committed, own_redis, tmp_path):
    own = settings.with_(broker_url=own_redis.url)
    app = create_app(own)
    with committed.session_scope() as session:
        for sub in USERS:
            user_id, _ = provision(session, sub)
            credits.grant(session, user_id, 500, "admin_grant")
        session.execute(update(User).where(User.clerk_id.in_(USERS)).values(plan_id="enterprise"))
    worker = celery_processes.worker(own, tmp_path / "worker.log", **ENV).start()
    beat = celery_processes.beat(own, tmp_path / "beat.log", tmp_path / "beat-schedule", **ENV)
    beat.start(ready_marker=None)
    submitter = Submitter(app)
    try:
        submitter.start()
        time.sleep(BEFORE_S)
        down_at = time.monotonic()
        own_redis.stop()
        time.sleep(OUTAGE_S)
        own_redis.start()
        up_at = time.monotonic()
        time.sleep(AFTER_S)
        submitter.stop.set()
        submitter.join(30)
        assert not submitter.is_alive()

        during = [s for when, s in submitter.latencies if down_at <= when < up_at]
        print(
            f"\nsubmissions: {dict(submitter.statuses)}; during the outage: {len(during)}, "
            f"max latency {max(during, default=0):.2f}s"
        )
        assert not submitter.errors, submitter.errors[:5]
        assert all(isinstance(k, str) or k < 500 for k in submitter.statuses), submitter.statuses
        assert len(during) >= OUTAGE_S, "the stream stalled while the broker was down"
        assert len(submitter.accepted) >= 100

        ids = set(submitter.accepted)

        def unfinished():
            with committed.session_scope() as session:
                return Counter(
                    session.scalars(
                        select(Task.status).where(Task.status.in_(("queued", "processing")))
                    )
                )

        try:
            wait_for(
                lambda: not unfinished(), timeout=90, interval=0.5, what="every accepted task ended"
            )
        except AssertionError:
            print(
                f"unfinished: {dict(unfinished())}\nbeat:\n{beat.log()[-3000:]}\n"
                f"worker:\n{worker.log()[-5000:]}"
            )
            raise
        with committed.session_scope() as session:
            rows = session.execute(select(Task.id, Task.status)).all()
            by_status = Counter(status for _, status in rows)
            charges = session.scalar(
                select(func.count())
                .select_from(CreditLedger)
                .where(CreditLedger.reason == "task_charge")
            )
            charged_tasks = session.scalar(
                select(func.count(func.distinct(CreditLedger.task_id))).where(
                    CreditLedger.reason == "task_charge"
                )
            )
            refunded = set(
                session.scalars(
                    select(CreditLedger.task_id).where(CreditLedger.reason == "task_refund")
                )
            )
            should_refund = {i for i, s in rows if s in ("failed", "canceled")}
        print(f"tasks by status: {dict(by_status)}")
        # Every accepted task exists and nothing else does: no charge without a task.
        assert {str(i) for i, _ in rows} == ids
        assert charges == charged_tasks == len(rows)
        assert refunded == should_refund
        assert by_status["succeeded"] > 0 and by_status["canceled"] > 0
        assert_audit_clean(committed)
    finally:
        submitter.stop.set()
        beat.stop()
        worker.stop()
        app.extensions["studiox"].db.dispose()

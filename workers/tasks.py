"""Celery tasks. Each takes ids (never ORM objects) and is idempotent: a duplicate or
redelivered message finds the work done (or held by someone else) and does nothing."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from shared.base import utcnow
from shared.credits import service as credits
from shared.logging import request_id_var, task_id_var
from shared.tasks import registry
from shared.tasks import service as lifecycle
from workers import webhooks
from workers.celery_app import app
from workers.pipelines import get_handler
from workers.pipelines.base import PermanentError, TaskCanceled, TaskContext, TransientError

log = logging.getLogger("studiox.worker")

RETRY_BASE_S = 2.0
RETRY_MAX_S = 60.0
# A claim that cannot reach PostgreSQL (restarting, failing over) is tried again this
# soon, for about a minute, rather than left to the sweeper's REQUEUE_AFTER_S (minutes).
CLAIM_RETRY_S = 2.0
CLAIM_RETRIES = 30


def _db():
    return app.studiox.db


# Progress is stored at most this often: polling clients need no more, and every write
# is a transaction.
PROGRESS_WRITE_INTERVAL_S = 0.5
# How soon a cancel request reaches a running handler (a cheap read, once a second).
CANCEL_POLL_S = 1.0


class _Watch:
    """The running task the lease keeper looks after."""

    def __init__(self, task_id: uuid.UUID, ctx: TaskContext, lease_s: int):
        self.task_id, self.ctx, self.lease_s = task_id, ctx, lease_s
        self.progress = 0.0
        self.renew_every = max(lease_s / 3, 0.2)
        self.check_every = min(CANCEL_POLL_S, self.renew_every)
        now = time.monotonic()
        self.last_renewal = now
        # The first look waits a whole interval: short tasks end before any is needed.
        self.next_check = now + self.check_every

    def check(self) -> None:
        """Renew the lease when due, else just read; tell the handler if it must stop."""
        now = time.monotonic()
        self.next_check = now + self.check_every
        with _db().session_scope(durable=False) as session:
            if now - self.last_renewal >= self.renew_every:
                wanted = lifecycle.record_progress(
                    session, self.task_id, self.progress, self.lease_s
                )
                self.last_renewal = now
            else:
                wanted = lifecycle.still_wanted(session, self.task_id)
        if not wanted:
            self.ctx.canceled.set()


class LeaseKeeper(threading.Thread):
    """Renews the running task's lease and notices cancel requests: one thread per
    worker process (`app.studiox.lease_keeper`, started with its first task), looking
    after whichever task runs.

    The lease is how a dead worker is detected: if this process dies, renewals stop and
    the sweeper takes the task back after `task_lease_s`. Renewal (a write) happens every
    third of the lease; in between, a read once a second looks for a cancel request.
    Tasks only set and clear `watching`: no thread to start, nothing to signal, per task.
    """

    TICK_S = 0.1

    def __init__(self):
        super().__init__(daemon=True, name="lease-keeper")
        self.watching: _Watch | None = None

    def run(self) -> None:
        while True:
            time.sleep(self.TICK_S)
            watch = self.watching
            if watch is None or time.monotonic() < watch.next_check:
                continue
            try:
                watch.check()
            except Exception:  # a blip: the next tick tries again
                log.warning("lease renewal failed", exc_info=True)


@app.task(name=lifecycle.RUN_TASK, bind=True, acks_late=True, ignore_result=True)
def run_task(self, task_id: str) -> str | None:
    """Run one task: claim it, run its pipeline, and end it in one transaction.

    Invariants: only one worker holds a task at a time (atomic claim + lease); every
    failure path ends the task failed or canceled *and* refunded (once); transient
    errors are retried with backoff until the type's attempts are spent.
    """
    task_uuid = uuid.UUID(task_id)
    settings = app.studiox.settings
    lease_s = settings.task_lease_s
    # Not durable: a claim lost in a database crash leaves the task queued, to be claimed
    # again; credits never move here.
    try:
        with _db().session_scope(durable=False) as session:
            claimed = lifecycle.claim_task(session, task_uuid, lease_s)
    except OperationalError as exc:
        # Nothing is claimed, so the message can simply come back. After the last try the
        # task is still queued in the database, and the sweeper sends it again.
        log.warning(
            "database unavailable at claim of task %s, trying again in %.0fs: %s",
            task_id,
            CLAIM_RETRY_S,
            str(exc).splitlines()[0][:300],
        )
        raise self.retry(countdown=CLAIM_RETRY_S, max_retries=CLAIM_RETRIES) from None
    if claimed is None:
        log.info("task %s is not claimable (ended, or held elsewhere); skipping", task_id)
        return None
    tokens = (request_id_var.set(claimed.request_id), task_id_var.set(task_id))
    try:
        return _run_claimed(self, claimed, settings, lease_s)
    finally:
        request_id_var.reset(tokens[0])
        task_id_var.reset(tokens[1])


def _run_claimed(celery_task, claimed, settings, lease_s: int) -> str | None:
    task_type = registry.get(claimed.type)
    handler = get_handler(claimed.type)
    log.info("running %s (attempt %s)", claimed.type, claimed.attempts)
    if handler is None:
        return _fail(claimed.id, "unknown_task_type", f"No worker handles {claimed.type!r}.")

    watch: _Watch | None = None

    # The first write waits an interval too: short tasks end before any is needed.
    last_write = [time.monotonic()]

    def report(fraction: float) -> bool:
        """Store progress (throttled); False when the task should stop."""
        if watch is not None:
            watch.progress = fraction
        if time.monotonic() - last_write[0] < PROGRESS_WRITE_INTERVAL_S:
            return True  # the lease keeper watches for cancels in between
        last_write[0] = time.monotonic()
        with _db().session_scope(durable=False) as session:  # a lost tick is harmless
            return lifecycle.record_progress(session, claimed.id, fraction, lease_s)

    ctx = TaskContext(
        task_id=claimed.id,
        user_id=claimed.user_id,
        type=claimed.type,
        input=claimed.input,
        attempt=claimed.attempts,
        settings=settings,
        storage=app.studiox.storage,
        report_progress=report,
    )
    keeper = app.studiox.lease_keeper
    keeper.watching = watch = _Watch(claimed.id, ctx, lease_s)
    try:
        output = handler(ctx)
    except TaskCanceled:
        with _db().session_scope() as session:
            lifecycle.finish_canceled(session, claimed.id)
        log.info("canceled")
        return "canceled"
    except SoftTimeLimitExceeded:
        return _fail(
            claimed.id, "time_limit", f"The task ran longer than {task_type.soft_time_limit_s} s."
        )
    except TransientError as exc:
        if claimed.attempts < task_type.max_attempts:
            delay = min(RETRY_BASE_S * 2 ** (claimed.attempts - 1), RETRY_MAX_S)
            with _db().session_scope() as session:
                released = lifecycle.release_for_retry(session, claimed.id, delay)
            if released:
                log.warning("transient error, retrying in %.0fs: %s", delay, exc.message)
                raise celery_task.retry(countdown=delay, max_retries=None) from None
            return None
        return _fail(
            claimed.id, exc.code, f"{exc.message} (gave up after {claimed.attempts} attempts)"
        )
    except PermanentError as exc:
        return _fail(claimed.id, exc.code, exc.message)
    except Exception as exc:
        log.exception("pipeline crashed")
        return _fail(claimed.id, "internal_error", f"The pipeline failed: {type(exc).__name__}.")
    finally:
        keeper.watching = None

    with _db().session_scope(single_statement=True) as session:
        succeeded = lifecycle.succeed_task(session, claimed.id, output, ctx.artifacts)
    if succeeded:
        final = lifecycle.SUCCEEDED
    else:  # a cancel came in meanwhile (or someone else ended it): refund in a transaction
        with _db().session_scope() as session:
            final = lifecycle.CANCELED if lifecycle.finish_canceled(session, claimed.id) else None
    log.info("finished: %s", final)
    return final


def _fail(task_id: uuid.UUID, code: str, message: str) -> str:
    with _db().session_scope() as session:
        lifecycle.fail_task(session, task_id, code, message)
    log.warning("failed (%s): %s", code, message)
    return "failed"


@app.task(name="studiox.sweep_stale_tasks", ignore_result=True)
def sweep_stale_tasks() -> dict:
    """Re-send queued tasks the broker never got or lost; take back tasks of dead
    workers (requeue, or fail + refund past their retry budget). Safe with two beats."""
    with _db().session_scope() as session:
        result = lifecycle.sweep(session, requeue_after_s=app.studiox.settings.requeue_after_s)
    if result.requeued or result.failed:
        log.info("sweep: requeued %d, failed %d", len(result.requeued), len(result.failed))
    return {"requeued": len(result.requeued), "failed": len(result.failed)}


@app.task(name="studiox.reset_due_credits", ignore_result=True)
def reset_due_credits(batch_size: int = 10_000) -> int:
    """Reset plan credits of every user whose reset date has passed (set-based, batched,
    idempotent, safe from two beats at once)."""
    total = 0
    while True:
        with _db().session_scope() as session:
            done = credits.reset_due(session, batch_size=batch_size)
        total += done
        if done < batch_size:
            break
    if total:
        log.info("monthly reset: %d users", total)
    return total


@app.task(name=lifecycle.DELIVER_WEBHOOK, bind=True, ignore_result=True, max_retries=8)
def deliver_webhook(self, task_id: str, status: str) -> bool:
    """POST a task's terminal event to its webhook_url (Standard Webhooks signature);
    retried with exponential backoff; the message id is stable across retries."""
    with _db().session_scope() as session:  # commits a webhook secret made just now
        delivery = webhooks.prepare(session, uuid.UUID(task_id), status)
    if delivery is None:
        return False
    if not webhooks.send(delivery, app.studiox.settings.webhook_timeout_s):
        base = app.studiox.settings.webhook_retry_base_s
        raise self.retry(countdown=min(base * 2**self.request.retries, 3600))
    return True


@app.task(name="studiox.delete_expired_artifacts", ignore_result=True)
def delete_expired_artifacts() -> int:
    """Delete artifact files of tasks that ended more than the retention period ago."""
    from shared.tasks.artifacts import expire_artifacts

    cutoff = utcnow() - timedelta(days=app.studiox.settings.artifact_retention_days)
    with _db().session_scope() as session:
        return expire_artifacts(session, app.studiox.storage, cutoff)


@app.task(name="studiox.ping", ignore_result=False)
def ping() -> str:
    """A no-op round trip through the broker (and the result backend, when one is set):
    the baseline of bench/latency.py, and a liveness probe for operators."""
    return "pong"

"""Tasks per second finished by 2 worker processes for the smallest real task (a 64x64
`image_analysis`), beside bare Celery no-op tasks per second with the same settings
(acks_late, prefetch 1, no result backend) in the same run; and a worker child's peak RSS.

The backlog is queued first (through the real create path) and held back under another
Redis key; a worker is started, and once it is ready the backlog is put back in its queue
in one step (RENAME) and timed until every task has ended. Run: `.venv/bin/python -m bench
worker`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from celery import Celery
from sqlalchemy import func, select, update

from bench._services import celery_worker, rss_mb, stack
from bench._support import print_table
from bench.latency import small_png
from shared.accounts.models import User
from shared.accounts.service import provision
from shared.credits import service as credits
from shared.db import Database
from shared.outbox import install
from shared.queue_config import TASK_QUEUE, celery_config, send_with_celery
from shared.tasks import registry
from shared.tasks import service as lifecycle
from shared.tasks.models import TERMINAL_STATUSES, Task

TASKS = 1000


def queue_tasks(settings, producer: Celery, n: int) -> None:
    database = Database(settings)
    install(database.sessionmaker, functools.partial(send_with_celery, producer))
    with database.session_scope() as session:
        user_id, _ = provision(session, "worker_bench")
        credits.grant(session, user_id, n, "admin_grant")
        session.execute(update(User).where(User.id == user_id).values(plan_id="enterprise"))
        session.execute(update(credits.plans).values(max_concurrent_tasks=n + 10))
    body = {"image_base64": small_png()}
    for start in range(0, n, 200):
        with database.session_scope() as session:
            for _ in range(min(200, n - start)):
                lifecycle.create_task(session, user_id, "image_analysis", body)
    database.dispose()


def wait_until_done(settings, n: int, started: float, timeout: float = 300) -> float:
    """Seconds from `started` until all `n` tasks have ended."""
    database = Database(settings)
    try:
        while time.perf_counter() - started < timeout:
            with database.session_scope() as session:
                done = session.execute(
                    select(func.count()).select_from(Task).where(Task.status.in_(TERMINAL_STATUSES))
                ).scalar_one()
            if done >= n:
                return time.perf_counter() - started
            time.sleep(0.05)
        raise TimeoutError(f"only {done} of {n} tasks ended")
    finally:
        database.dispose()


HELD_BACK = f"{TASK_QUEUE}.held-back"


@contextlib.contextmanager
def backlog_held_back(broker_url: str) -> Iterator[Callable[[], float]]:
    """Move the queued messages aside while a worker boots; the function it yields puts
    them back in one step and returns when it did (perf_counter), so no worker's boot is
    timed and none gets a head start."""
    client = redis.Redis.from_url(broker_url)
    client.rename(TASK_QUEUE, HELD_BACK)

    def release() -> float:
        client.rename(HELD_BACK, TASK_QUEUE)
        return time.perf_counter()

    try:
        yield release
    finally:
        client.close()


def bare_rate(
    settings,
    producer: Celery,
    workdir: Path,
    n: int,
    task: str,
    args: list,
    app: str = "workers.celery_app",
) -> float:
    """Tasks/s of a plain Celery worker (same settings) draining `n` queued `task`s."""
    for _ in range(n):
        producer.send_task(task, args=args)
    client = redis.Redis.from_url(settings.broker_url)
    folder = workdir / task
    folder.mkdir()
    with (
        backlog_held_back(settings.broker_url) as release,
        celery_worker(settings, folder, concurrency=2, app=app, LOG_LEVEL="WARNING"),
    ):
        started = release()
        while client.llen(TASK_QUEUE) or client.hlen("unacked"):
            time.sleep(0.01)
        return n / (time.perf_counter() - started)


def main() -> None:
    with stack("worker") as (workdir, db, settings):
        broker = settings.broker_url
        producer = Celery("bench", broker=broker)
        producer.conf.update(celery_config(settings, 3600))
        queue_tasks(settings, producer, TASKS)
        with (
            backlog_held_back(broker) as release,
            celery_worker(settings, workdir, concurrency=2, LOG_LEVEL="WARNING") as worker,
        ):
            seconds = wait_until_done(settings, TASKS, started=release())
            child_rss = max(rss_mb(pid) for pid in worker.children())
        with Database(settings).session_scope() as session:
            outcomes = dict(
                session.execute(select(Task.status, func.count()).group_by(Task.status)).all()
            )
        real = TASKS / seconds
        bare = bare_rate(settings, producer, workdir, TASKS, "celery.accumulate", [1])
        pipeline_only = bare_rate(
            settings,
            producer,
            workdir,
            TASKS,
            "bench.analyze_only",
            # The input as the API stores it (validated): what a worker reads.
            [registry.get("image_analysis").validate({"image_base64": small_png()})],
            app="bench._pipeline_app",
        )
        print_table(
            f"tasks/s finished by 2 worker processes ({TASKS} queued first)",
            ["workload", "tasks/s", "of bare"],
            [
                [
                    "image_analysis 64x64 (claim, run, store, finish)",
                    real,
                    f"{100 * real / bare:.0f}%",
                ],
                [
                    "bare Celery running the same pipeline (no database)",
                    pipeline_only,
                    f"{100 * pipeline_only / bare:.0f}%",
                ],
                ["bare Celery no-op (acks_late, prefetch 1)", bare, "100%"],
            ],
        )
        print(
            f"  outcomes: {outcomes}; peak RSS of a worker child: {child_rss:.0f} MB "
            "(target <= 250 MB; target rate >= 50% of bare)"
        )


if __name__ == "__main__":
    main()

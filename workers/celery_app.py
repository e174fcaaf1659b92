"""The Celery app of the workers and beat: `celery -A workers.celery_app worker|beat`."""

from __future__ import annotations

import gc

from celery import Celery, signals

from shared.config import Settings
from shared.db import Database
from shared.logging import configure_logging
from shared.queue_config import celery_config, send_with_celery
from shared.tasks import registry
from workers.schedule import beat_schedule


class WorkerState:
    """Per-process resources, created lazily so prefork children get their own."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._db: Database | None = None
        self._storage = None
        self._lease_keeper = None

    @property
    def db(self) -> Database:
        if self._db is None:
            from shared import outbox

            self._db = Database(self.settings)
            outbox.install(self._db.sessionmaker, _send_from_worker)
        return self._db

    @property
    def storage(self):
        if self._storage is None:
            from shared.storage import make_storage

            self._storage = make_storage(self.settings.storage_url, self.settings.s3_endpoint_url)
        return self._storage

    @property
    def lease_keeper(self):
        """The thread that keeps running tasks' leases (workers/tasks.py)."""
        if self._lease_keeper is None:
            from workers.tasks import LeaseKeeper

            self._lease_keeper = LeaseKeeper()
            self._lease_keeper.start()
        return self._lease_keeper

    def reset_after_fork(self) -> None:
        # Prefork children must not share the parent's sockets, and threads do not
        # survive a fork.
        if self._db is not None:
            self._db.dispose()
        self._db = None
        self._lease_keeper = None


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    configure_logging(settings, "worker")
    registry.load_plugins(settings.task_type_plugins)
    app = Celery("studiox")
    app.conf.update(
        celery_config(settings, visibility_timeout_s=2 * registry.longest_time_limit_s())
    )
    app.conf.beat_schedule = beat_schedule(settings)
    app.conf.include = ["workers.tasks"]
    app.studiox = WorkerState(settings)
    return app


def _send_from_worker(message) -> None:
    send_with_celery(app, message)


@signals.worker_init.connect
def _worker_starting(**_kwargs):
    # In the main process, before the pool forks: otherwise every child would import the
    # pipelines (NumPy, Pillow: ~0.4 s of CPU) in its first task, again after each
    # recycle, and hold its own copy of them.
    from workers.pipelines import load_builtin

    load_builtin()
    # Everything loaded so far lives as long as the process: out of the collector's way
    # (a full collection over it is a pause of tens of ms in whichever task triggers it).
    gc.freeze()


@signals.worker_process_init.connect
def _child_started(**_kwargs):
    app.studiox.reset_after_fork()


app = make_celery()

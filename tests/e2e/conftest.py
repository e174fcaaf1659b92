"""End-to-end fixtures: the app sending to the real Redis, and a real Celery worker."""

from __future__ import annotations

import pytest

from tests.support import worker as celery_processes
from tests.support.waiting import wait_for  # noqa: F401  (re-exported for the tests here)

pytestmark = pytest.mark.e2e

# Short leases so a killed worker's task is taken back within seconds.
E2E_ENV = {"TASK_LEASE_S": 3}


@pytest.fixture()
def live_client(app, committed):
    """The app with real commits and real sends to the broker."""
    return app.test_client()


@pytest.fixture()
def celery_worker(settings, tmp_path):
    proc = celery_processes.worker(settings, tmp_path / "worker.log", **E2E_ENV).start()
    yield proc
    proc.stop()


@pytest.fixture()
def start_worker(settings, tmp_path):
    """Start workers on demand (for tests that kill and restart them)."""
    started = []

    def start(**env):
        n = len(started)
        proc = celery_processes.worker(settings, tmp_path / f"worker{n}.log", **{**E2E_ENV, **env})
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()

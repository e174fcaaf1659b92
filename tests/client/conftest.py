"""Fixtures for the Python client and the `studiox` command: the real app served over
HTTP on 127.0.0.1, a real Celery worker, and API keys.

The app's own sessions commit for real here, so every test runs under `committed`, which
empties the tables afterwards.
"""

from __future__ import annotations

import threading

import httpx
import pytest
from sqlalchemy import select, update
from werkzeug.serving import WSGIRequestHandler, make_server

from shared.base import utcnow
from shared.tasks.models import Task
from studiox_client import Client
from tests.e2e.conftest import E2E_ENV, wait_for  # noqa: F401  (re-exported to the tests)
from tests.support import worker as celery_processes


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass  # the app logs its own access lines


@pytest.fixture(scope="package")
def server(app):
    """The Flask app on a real socket (werkzeug, threaded), for the package's tests."""
    http = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(10)


@pytest.fixture(scope="package")
def worker(settings, tmp_path_factory):
    """One real `celery worker` for the package: starting one per test costs seconds.
    Package scope stops it before other packages' tests start their own workers."""
    log = tmp_path_factory.mktemp("client-worker") / "worker.log"
    proc = celery_processes.worker(settings, log, **E2E_ENV).start()
    yield proc
    proc.stop()


@pytest.fixture()
def base_url(server, committed):
    yield server
    settle_tasks(committed)


def settle_tasks(database, timeout: float = 20.0) -> None:
    """Stop the package's worker from touching tasks before `committed` truncates the
    tables (it outlives each test): a worker transaction racing TRUNCATE can deadlock.
    Queued tasks are marked canceled so it skips them; running ones are asked to stop."""
    tasks = Task.__table__
    with database.session_scope() as session:
        session.execute(update(tasks).where(tasks.c.status == "queued").values(status="canceled"))
        session.execute(
            update(tasks)
            .where(tasks.c.status == "processing", tasks.c.cancel_requested_at.is_(None))
            .values(cancel_requested_at=utcnow())
        )

    def nothing_running():
        with database.session_scope() as session:
            return not session.execute(
                select(tasks.c.id).where(tasks.c.status == "processing").limit(1)
            ).first()

    wait_for(nothing_running, timeout)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No STUDIOX_* variables or stored login leak in from the machine running the tests."""
    monkeypatch.delenv("STUDIOX_URL", raising=False)
    monkeypatch.delenv("STUDIOX_API_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture()
def new_key(base_url, token):
    """`new_key("user_x")`: a fresh API key for that user, made through the API."""

    def make(sub: str = "user_client", name: str = "tests") -> str:
        response = httpx.post(
            f"{base_url}/api/users/api-keys",
            json={"name": name},
            headers={"Authorization": f"Bearer {token(sub)}"},
        )
        assert response.status_code == 201, response.text
        return response.json()["key"]

    return make


@pytest.fixture()
def sx(base_url, new_key):
    """A client for `user_client`, authenticated with an API key."""
    with Client(base_url, new_key(), retry_backoff=0.01) as client:
        yield client

"""PostgreSQL stopped under a running app: every path answers 503 `service_unavailable`
(never 500), and the app recovers by itself (idle pooled connections are pinged, dead ones
replaced) once PostgreSQL is back; a worker that meets the outage at a claim runs the task
once PostgreSQL is back, without waiting for the sweeper."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from api import create_app
from api.auth import make_dev_token
from shared.db import Database
from tests.resilience.conftest import assert_audit_clean, migrate, wait_for
from tests.support import worker as celery_processes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_app(settings, own_postgres):
    app = create_app(
        settings.with_(database_url=own_postgres.url, db_pool_size=3, db_max_overflow=2)
    )
    app.config["TESTING"] = True
    migrate(app)
    # The broker is not under test: keep the sends (the shared Redis has no consumer
    # for this database's tasks).
    app.extensions["studiox"].send = lambda message: None
    yield app
    app.extensions["studiox"].db.dispose()


def headers(app, sub: str) -> dict:
    token = make_dev_token(app.extensions["studiox"].settings, sub)
    return {"Authorization": f"Bearer {token}"}


def create(client, app, sub, **extra):
    return client.post(
        "/api/tasks", json={"type": "echo", "input": {}}, headers={**headers(app, sub), **extra}
    )


@pytest.mark.parametrize("stop_mode", ["fast", "immediate"])
def test_database_down_is_503_everywhere_and_the_app_recovers_by_itself(
    pg_app, own_postgres, stop_mode
):
    client = pg_app.test_client()
    user = f"pg_{stop_mode}"
    assert client.get("/ready").status_code == 200
    first = create(client, pg_app, user)
    assert first.status_code == 202, first.get_json()
    task_id = first.get_json()["id"]
    # Fill the pool with connections that the outage will kill.
    for _ in range(3):
        assert client.get("/api/users/me", headers=headers(pg_app, user)).status_code == 200

    own_postgres.stop(stop_mode)
    try:
        known, newcomer = headers(pg_app, user), headers(pg_app, f"new_{stop_mode}")
        calls = [
            ("GET", "/ready", {}, None),
            ("POST", "/api/tasks", known, {"type": "echo", "input": {}}),
            ("POST", "/api/tasks/create", known, {"type": "echo", "input": {}}),
            (
                "POST",
                "/api/tasks",
                known | {"Idempotency-Key": "k1"},
                {"type": "echo", "input": {}},
            ),
            ("GET", "/api/tasks", known, None),
            ("GET", f"/api/tasks/{task_id}", known, None),
            ("POST", f"/api/tasks/{task_id}/cancel", known, None),
            ("GET", "/api/users/me", known, None),
            ("GET", "/api/users/credits", known, None),
            ("GET", "/api/users/transactions", known, None),
            ("GET", "/api/users/webhook-secret", known, None),
            ("GET", "/api/users/api-keys", known, None),
            # Auth must provision a caller it has never seen: that needs the database too.
            ("POST", "/api/users/initialize", newcomer, None),
            ("GET", "/api/users/me", newcomer, None),
            ("POST", "/api/tasks", newcomer, {"type": "echo", "input": {}}),
            ("GET", "/api/billing/plans", {}, None),
            ("GET", "/api/billing/history", known, None),
        ]
        # Twice: the first round meets the pool's dead connections, the second a refused
        # connect.
        for _round in range(2):
            for method, path, hdrs, body in calls:
                started = time.monotonic()
                response = client.open(path, method=method, headers=hdrs, json=body)
                took = time.monotonic() - started
                assert response.status_code == 503, (
                    method,
                    path,
                    response.status_code,
                    response.get_data(as_text=True)[:500],
                )
                error = response.get_json()["error"]
                assert error["code"] == "service_unavailable", (method, path, error)
                assert response.headers.get("Retry-After"), (method, path)
                assert took < 15, (method, path, took)
        ready = client.get("/ready").get_json()
        assert ready["error"]["details"]["unavailable"] == ["database"]
        # Liveness does not depend on the database.
        assert client.get("/health").status_code == 200
    finally:
        own_postgres.start()

    # No restart of the app: the next requests find a database again.
    wait_for(lambda: client.get("/ready").status_code == 200, timeout=30, what="ready again")
    again = create(client, pg_app, user)
    assert again.status_code == 202, again.get_json()
    got = client.get(f"/api/tasks/{again.get_json()['id']}", headers=headers(pg_app, user))
    assert got.status_code == 200
    newcomer = client.post("/api/users/initialize", headers=headers(pg_app, f"new_{stop_mode}"))
    assert newcomer.status_code == 201, newcomer.get_json()
    # Nothing half-done survived the outage: the failed submissions charged nothing.
    listed = client.get("/api/tasks?limit=100", headers=headers(pg_app, user)).get_json()
    credits_now = client.get("/api/users/credits", headers=headers(pg_app, user)).get_json()
    assert len(listed["items"]) == 2
    assert credits_now["total"] == 10 - 2
    assert_audit_clean(pg_app.extensions["studiox"].db)


def test_a_claim_that_meets_a_stopped_database_runs_the_task_once_it_is_back(
    settings, own_postgres, own_redis, tmp_path
):
    """The message reaches a worker while PostgreSQL is down: the claim fails, the message
    comes back every CLAIM_RETRY_S, and the task runs once PostgreSQL answers again. (No
    beat runs here: without the retry the task would stay queued until a sweep.)"""
    own = settings.with_(database_url=own_postgres.url, broker_url=own_redis.url)
    app = create_app(own)
    migrate(app)  # a no-op after the first test of the module
    database = Database(own)
    worker = None
    try:
        submitted = create(app.test_client(), app, "claim_outage")
        assert submitted.status_code == 202, submitted.get_json()
        task_id = submitted.get_json()["id"]
        own_postgres.stop("fast")
        try:
            worker = celery_processes.worker(own, tmp_path / "worker.log", concurrency=1)
            worker.start()
            worker.wait_for_log("database unavailable at claim", timeout=30)
        finally:
            own_postgres.start()

        def status() -> str | None:
            try:
                with database.session_scope() as session:
                    return session.scalar(
                        text("SELECT status FROM tasks WHERE id = :id"), {"id": task_id}
                    )
            except OperationalError:
                return None

        wait_for(lambda: status() == "succeeded", timeout=30, what="the task to run")
        assert_audit_clean(database)
    finally:
        if worker is not None:
            worker.stop()
        database.dispose()
        app.extensions["studiox"].db.dispose()

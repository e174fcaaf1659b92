"""The API under real gunicorn (gunicorn.conf.py): metrics from several processes on one
page, and a graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.config import PROJECT_ROOT
from shared.tasks import service as lifecycle
from tests.ops.conftest import free_port, http_ok, wait_for
from tests.support.worker import process_env

pytestmark = pytest.mark.slow


class Gunicorn:
    def __init__(self, settings, log_path, workers: int, **extra):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = process_env(settings, HOST="127.0.0.1", PORT=self.port, WEB_THREADS=4, **extra)
        if "PROMETHEUS_MULTIPROC_DIR" not in extra:
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes its own
        self.log_file = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "gunicorn.conf.py",
                "--workers",
                str(workers),
                "api:create_app()",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(self._up, timeout=30, what="gunicorn to answer")
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{self.log()[-3000:]}")
        return http_ok(f"{self.base}/health")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log_file.close()


@pytest.fixture()
def gunicorn(settings, committed, tmp_path):
    started = []

    def start(workers: int = 2, **env) -> Gunicorn:
        server = Gunicorn(settings, tmp_path / f"gunicorn{len(started)}.log", workers, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _samples(page: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def test_metrics_add_up_every_gunicorn_process(gunicorn, token, database, tmp_path):
    metrics_dir = tmp_path / "metrics"
    server = gunicorn(workers=2, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    worker_pids = {
        int(line.rsplit("pid: ", 1)[1].rstrip(")"))
        for line in server.log().splitlines()
        if "Booting worker with pid: " in line
    }
    assert len(worker_pids) == 2
    user = f"ops_metrics_{uuid.uuid4().hex[:8]}"
    auth = {"Authorization": f"Bearer {token(user)}"}

    # Fresh connections, so both processes get some of the traffic.
    for _ in range(30):
        assert httpx.get(f"{server.base}/health").status_code == 200
    assert httpx.get(f"{server.base}/api/tasks/{uuid.uuid4()}", headers=auth).status_code == 404
    created = [
        httpx.post(f"{server.base}/api/tasks", json={"type": "echo", "input": {}}, headers=auth)
        for _ in range(2)
    ]
    assert [r.status_code for r in created] == [202, 202]
    # No worker here: end the two tasks the way a worker does.
    first, second = (uuid.UUID(r.json()["id"]) for r in created)
    with database.session_scope() as session:
        assert lifecycle.claim_task(session, first, lease_s=60) is not None
    time.sleep(0.05)
    with database.session_scope() as session:
        assert lifecycle.complete_task(session, first, {"echo": ""}) == "succeeded"
        assert lifecycle.fail_task(session, second, "echo_failed", "asked to fail")

    samples = _samples(httpx.get(f"{server.base}/metrics").text)

    # Requests: counted by whichever process served them, summed on one page.
    health = (("method", "GET"), ("route", "/health"), ("status", "200"))
    assert samples[("studiox_http_requests_total", health)] >= 30
    assert samples[("studiox_http_request_duration_seconds_count", health)] >= 30
    missing = (("method", "GET"), ("route", "/api/tasks/<task_id>"), ("status", "404"))
    assert samples[("studiox_http_requests_total", missing)] == 1
    created_labels = (("method", "POST"), ("route", "/api/tasks"), ("status", "202"))
    assert samples[("studiox_http_requests_total", created_labels)] == 2
    # Tasks and credits, from the database.
    echo = (("type", "echo"),)
    assert samples[("studiox_tasks_created_total", echo)] == 2
    ok = (("outcome", "succeeded"), ("type", "echo"))
    failed = (("outcome", "failed"), ("type", "echo"))
    assert samples[("studiox_tasks_finished_total", ok)] == 1
    assert samples[("studiox_tasks_finished_total", failed)] == 1
    assert samples[("studiox_task_run_seconds_count", ok)] == 1
    assert 0 < samples[("studiox_task_run_seconds_sum", ok)] < 30
    assert samples[("studiox_task_run_seconds_bucket", (("le", "+Inf"), *ok))] == 1
    assert samples[("studiox_credits_charged_total", echo)] == 2
    assert samples[("studiox_credits_refunded_total", echo)] == 1
    assert samples[("studiox_queue_depth", ())] == 0
    assert samples[("studiox_metrics_database_up", ())] == 1

    # The page adds up the files of both processes (each serves part of the traffic).
    files = sorted(os.listdir(metrics_dir))
    writers = {pid for pid in worker_pids for name in files if name.endswith(f"_{pid}.db")}
    assert writers == worker_pids, (files, worker_pids)


def test_sigterm_lets_gunicorn_finish_the_request_in_flight(gunicorn, token):
    server = gunicorn(workers=1)
    auth = {"Authorization": f"Bearer {token(f'ops_term_{uuid.uuid4().hex[:8]}')}"}
    result = {}

    def slow_request():
        # No worker runs: the API waits the full 3 s for the task before it answers 202.
        started = time.monotonic()
        result["response"] = httpx.post(
            f"{server.base}/api/tasks",
            json={"type": "echo", "input": {}},
            headers={**auth, "Prefer": "wait=3"},
            timeout=20,
        )
        result["took"] = time.monotonic() - started

    client = threading.Thread(target=slow_request)
    client.start()
    time.sleep(1.0)
    os.kill(server.proc.pid, signal.SIGTERM)  # the master only, as docker stop would
    client.join(20)
    assert result["response"].status_code == 202
    assert result["took"] >= 2.5
    server.proc.wait(20)
    assert server.proc.returncode == 0
    assert not http_ok(f"{server.base}/health")

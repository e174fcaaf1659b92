"""`make run` for real: the embedded stack (SQLite + filesystem broker) in a temporary
directory, a task over HTTP with the printed dev token, then Ctrl-C."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from shared.config import PROJECT_ROOT
from tests.ops.conftest import alive, clean_env, descendants, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _png_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (10, 120, 240)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture()
def make_run(tmp_path):
    """`make run` with no DATABASE_URL and no broker URL, its var/ in tmp_path.

    VENV points make at the interpreter running the tests and `-o` tells it the install
    stamp is fresh, so the test does not reinstall anything.
    """
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = Path(sys.prefix)
    port = free_port()
    log_path = tmp_path / "make-run.log"
    env = clean_env(
        STUDIOX_VAR_DIR=tmp_path / "var",
        PORT=port,
        LOG_FORMAT="text",
        LOG_LEVEL="INFO",
        WORKER_CONCURRENCY=1,
    )
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                "make",
                "-s",
                "-C",
                str(PROJECT_ROOT),
                f"VENV={venv}",
                "-o",
                f"{venv}/.installed",
                "run",
            ],
            cwd=tmp_path,  # a directory of its own, away from the checkout's var/
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # like a terminal's foreground job: Ctrl-C hits the group
        )
    stack = {"proc": proc, "log": lambda: log_path.read_text(errors="replace"), "port": port}
    try:
        yield stack
    finally:
        if proc.poll() is None:  # the test failed before stopping it: do not leak processes
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                for pid in descendants(proc.pid):
                    os.kill(pid, signal.SIGKILL)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_make_run_serves_a_task_and_stops_cleanly_on_ctrl_c(make_run, tmp_path):
    proc, log, port = make_run["proc"], make_run["log"], make_run["port"]

    def banner():
        if proc.poll() is not None:
            raise AssertionError(f"make run exited early:\n{log()[-4000:]}")
        return re.search(r"Token:\s+(\S+)", log())

    token = wait_for(banner, timeout=90, interval=0.3, what="the make run banner").group(1)
    base = f"http://127.0.0.1:{port}"
    assert f"URL:    {base}" in log()
    assert f"Docs:   {base}/docs" in log()
    # The embedded defaults, in the var dir we chose.
    assert (tmp_path / "var" / "studiox.db").exists()
    assert (tmp_path / "var" / "broker").is_dir()
    assert (tmp_path / "var" / "dev_jwt_secret").stat().st_mode & 0o077 == 0

    request_id = f"ops-make-run-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}
    response = httpx.post(
        f"{base}/api/tasks",
        json={"type": "image_analysis", "input": {"image_base64": _png_base64()}},
        headers={**headers, "Prefer": "wait=30"},
        timeout=40,
    )
    assert response.status_code in (200, 202), response.text
    task_id = response.json()["id"]

    def ended():
        task = httpx.get(f"{base}/api/tasks/{task_id}", headers=headers, timeout=5).json()
        return task if task["status"] in ("succeeded", "failed", "canceled") else None

    task = wait_for(ended, timeout=30, interval=0.3, what="the task to end")
    assert task["status"] == "succeeded", task
    assert task["output"]["width"] == 16 and task["output"]["height"] == 8
    credits = httpx.get(f"{base}/api/users/credits", headers=headers, timeout=5).json()
    assert credits["total"] == 9  # the free plan's 10, minus the task

    # The request id follows the task into the worker's lines about it. (Celery's
    # "received" line is written by the worker's main process before any task code
    # runs; it carries the task id only.)
    def worker_lines():
        lines = [
            line
            for line in log().splitlines()
            if re.match(r"\S+ worker\s+\|", line) and task_id in line and " received" not in line
        ]
        return lines if any("succeeded in" in line for line in lines) else None

    lines = wait_for(worker_lines, timeout=10, what="the worker's lines about the task")
    assert len(lines) >= 3, lines
    assert all(f"request_id={request_id}" in line for line in lines), lines

    # Remote control through the filesystem broker's control folder (inspect, revoke).
    ping = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.celery_app",
            "inspect",
            "ping",
            "--timeout",
            "5",
        ],
        cwd=PROJECT_ROOT,
        env=clean_env(STUDIOX_VAR_DIR=tmp_path / "var", LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "pong" in ping.stdout, ping.stdout + ping.stderr

    # The database-derived metrics work on SQLite too.
    page = httpx.get(f"{base}/metrics", timeout=5).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }
    finished = (
        "studiox_tasks_finished_total",
        (("outcome", "succeeded"), ("type", "image_analysis")),
    )
    assert samples[finished] == 1

    # Ctrl-C: the terminal sends SIGINT to the foreground job (make and its children).
    before = descendants(proc.pid)
    assert len(before) >= 5, before  # devserver, gunicorn master + worker, celery, beat
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(45)
    assert "all stopped" in log(), log()[-3000:]
    wait_for(
        lambda: not any(alive(pid) for pid in before),
        timeout=10,
        what="every process of the stack to exit",
    )
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/health", timeout=2)

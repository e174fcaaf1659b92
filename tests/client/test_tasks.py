"""The client against the real app and a real worker: run, wait, cancel, list, webhooks."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from studiox_client import Conflict, TaskCanceled, TaskFailed, WaitTimeout, verify_webhook
from tests.client.conftest import wait_for

pytestmark = pytest.mark.e2e

SLOW = {"steps": 40, "step_seconds": 0.1}  # about 4 s: long enough to catch it running


def test_run_returns_the_output_and_reports_progress(sx, worker):
    seen = []
    task = sx.tasks.run(
        "echo", {"message": "hello", "steps": 4, "step_seconds": 0.2}, on_update=seen.append
    )
    assert task.status == "succeeded"
    assert task.output["echo"] == "hello"
    assert task.progress == 1.0 and task.completed_at is not None
    assert seen[-1] == task
    progress = [t.progress for t in seen]
    assert progress == sorted(progress)  # never goes backwards
    assert sx.credits().total == 9
    ledger = list(sx.transactions())
    assert [(e.reason, e.delta, e.balance_after) for e in ledger] == [
        ("task_charge", -1, 9),
        ("signup_grant", 10, 10),
    ]
    assert ledger[0].task_id == task.id


def test_create_then_wait_then_get(sx, worker):
    task = sx.tasks.create("echo", {"message": "later", "steps": 2})
    assert task.status in ("queued", "processing")
    done = sx.tasks.wait(task, timeout=30)
    assert done.succeeded and done.output["echo"] == "later"
    assert sx.tasks.get(task.id) == done


def test_prefer_wait_on_create_returns_the_finished_task(sx, worker):
    task = sx.tasks.create("echo", {"message": "quick"}, wait=20)
    assert task.status == "succeeded"


def test_run_raises_task_failed_and_the_credit_comes_back(sx, worker):
    with pytest.raises(TaskFailed) as exc:
        sx.tasks.run("echo", {"fail": "permanent"})
    assert exc.value.task.status == "failed"
    assert exc.value.task.error.code == "echo_failed"
    assert "echo_failed" in str(exc.value)
    assert sx.credits().total == 10


def test_idempotent_create_charges_once(sx):
    key = f"order-{uuid.uuid4()}"
    first = sx.tasks.create("echo", {"message": "once"}, idempotency_key=key)
    again = sx.tasks.create("echo", {"message": "once"}, idempotency_key=key)
    assert again.id == first.id
    assert sx.credits().total == 9


def test_cancel_a_running_task(sx, worker):
    task = sx.tasks.create("echo", SLOW)
    wait_for(lambda: sx.tasks.get(task).status == "processing", timeout=15)
    asked = sx.tasks.cancel(task)
    assert asked.status == "canceled" or asked.cancel_requested
    done = sx.tasks.wait(task, timeout=15)
    assert done.status == "canceled"
    assert sx.tasks.cancel(task).status == "canceled"  # again: a no-op, not an error
    assert sx.credits().total == 10


def test_cancel_a_finished_task_is_a_conflict(sx, worker):
    task = sx.tasks.run("echo", {})
    with pytest.raises(Conflict) as exc:
        sx.tasks.cancel(task)
    assert exc.value.details["status"] == "succeeded"


def test_run_of_a_canceled_task_raises_task_canceled(sx, worker):
    outcome = {}

    def run():
        try:
            sx.tasks.run("echo", SLOW, on_update=lambda t: outcome.setdefault("id", t.id))
        except TaskFailed as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    wait_for(lambda: outcome.get("id"), timeout=10)
    sx.tasks.cancel(outcome["id"])
    runner.join(20)
    assert isinstance(outcome["error"], TaskCanceled)


def test_wait_times_out_while_the_task_keeps_running(sx, worker):
    task = sx.tasks.create("echo", SLOW)
    with pytest.raises(WaitTimeout) as exc:
        sx.tasks.wait(task, timeout=0.5)
    assert exc.value.task.id == task.id and not exc.value.task.ended
    sx.tasks.cancel(task)
    assert sx.tasks.wait(task, timeout=15).status == "canceled"


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps what it is sent."""

    def __init__(self):
        self.deliveries: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.deliveries.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_delivered_webhook_verifies_with_the_users_secret(sx, worker):
    receiver = Receiver()
    try:
        task = sx.tasks.run("echo", {"message": "hook"}, webhook_url=receiver.url)
        headers, body = wait_for(lambda: receiver.deliveries and receiver.deliveries[0], 20)
    finally:
        receiver.close()
    event = verify_webhook(headers, body, sx.webhook_secret())
    assert event["type"] == "task.succeeded"
    assert event["data"]["id"] == task.id
    assert event["data"]["output"]["echo"] == "hook"

"""Task webhooks: signed per Standard Webhooks, retried with a stable id until accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.e2e.conftest import wait_for


class Receiver:
    """Records deliveries; answers 500 to the first `fail_first` of them."""

    def __init__(self, fail_first: int = 0):
        self.deliveries: list[tuple[dict, bytes, int]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(outer.deliveries) < outer.fail_first else 204
                outer.deliveries.append(
                    ({k.lower(): v for k, v in self.headers.items()}, body, status)
                )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/studiox"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver():
    made = []

    def make(fail_first=0):
        made.append(Receiver(fail_first))
        return made[-1]

    yield make
    for r in made:
        r.close()


def expected_signature(secret: str, headers: dict, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_terminal_event_is_delivered_signed(live_client, auth, start_worker, receiver):
    worker = start_worker(WEBHOOK_RETRY_BASE_S=0.2)
    hook = receiver()
    secret = live_client.get("/api/users/webhook-secret", headers=auth()).get_json()["secret"]
    task = live_client.post(
        "/api/tasks",
        headers=auth(),
        json={
            "type": "echo",
            "input": {"message": "call me"},
            "webhook_url": hook.url,
        },
    ).get_json()
    try:
        wait_for(lambda: hook.deliveries, timeout=20)
    except AssertionError:
        print(worker.log())
        raise
    headers, body, _ = hook.deliveries[0]
    assert headers["webhook-signature"] == expected_signature(secret, headers, body)
    event = json.loads(body)
    assert event["type"] == "task.succeeded"
    assert event["data"]["id"] == task["id"]
    assert event["data"]["output"]["echo"] == "call me"


def test_failed_delivery_is_retried_with_the_same_id(live_client, auth, start_worker, receiver):
    start_worker(WEBHOOK_RETRY_BASE_S=0.2)
    hook = receiver(fail_first=2)
    live_client.post(
        "/api/tasks",
        headers=auth(),
        json={
            "type": "echo",
            "input": {"fail": "permanent"},
            "webhook_url": hook.url,
            "webhook_events": ["failed"],
        },
    )
    wait_for(lambda: len(hook.deliveries) >= 3, timeout=30)
    ids = {h["webhook-id"] for h, _, _ in hook.deliveries}
    assert len(ids) == 1
    assert [s for _, _, s in hook.deliveries[:3]] == [500, 500, 204]
    assert json.loads(hook.deliveries[-1][1])["type"] == "task.failed"


def test_events_not_asked_for_are_not_sent(live_client, auth, start_worker, receiver):
    worker = start_worker(WEBHOOK_RETRY_BASE_S=0.2)
    hook = receiver()
    task = live_client.post(
        "/api/tasks",
        headers=auth(),
        json={
            "type": "echo",
            "input": {},
            "webhook_url": hook.url,
            "webhook_events": ["failed"],
        },
    ).get_json()
    wait_for(
        lambda: (
            live_client.get(f"/api/tasks/{task['id']}", headers=auth()).get_json()["status"]
            == "succeeded"
        )
    )
    wait_for(lambda: "finished: succeeded" in worker.log(), timeout=10)
    assert hook.deliveries == []

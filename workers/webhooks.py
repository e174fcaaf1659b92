"""Outbound task webhooks, signed per the Standard Webhooks spec.

Headers: `webhook-id` (stable per task event, so receivers can deduplicate retries),
`webhook-timestamp` (unix seconds), `webhook-signature` (`v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}"` keyed with the user's `whsec_` secret)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session

from shared.accounts import service as accounts
from shared.tasks.models import Task
from shared.tasks.representation import task_json

log = logging.getLogger("studiox.webhooks")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Delivery:
    """One signed webhook request, ready to send."""

    url: str
    body: bytes
    headers: dict[str, str]

    @property
    def msg_id(self) -> str:
        return self.headers["webhook-id"]


def prepare(session: Session, task_id: uuid.UUID, status: str) -> Delivery | None:
    """The signed request for a task's terminal event, or None when there is no webhook.

    The message id is stable per task event, so retries carry the same `webhook-id`.
    """
    task = session.get(Task, task_id)
    if task is None or not task.webhook_url:
        return None
    secret = accounts.webhook_secret(session, task.user_id)
    msg_id = f"msg_{task.id.hex}_{status}"
    timestamp = int(time.time())
    body = json.dumps(
        {"type": f"task.{status}", "timestamp": timestamp, "data": task_json(task)},
        separators=(",", ":"),
    ).encode()
    headers = {
        "content-type": "application/json",
        "user-agent": "StudioX-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
    return Delivery(task.webhook_url, body, headers)


def send(delivery: Delivery, timeout_s: float) -> bool:
    """POST it once (no database connection held). True when the receiver took it."""
    try:
        response = httpx.post(
            delivery.url,
            content=delivery.body,
            headers=delivery.headers,
            timeout=timeout_s,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        log.warning("webhook %s to %s failed: %s", delivery.msg_id, delivery.url, exc)
        return False
    if 200 <= response.status_code < 300:
        return True
    log.warning("webhook %s to %s answered %s", delivery.msg_id, delivery.url, response.status_code)
    return False

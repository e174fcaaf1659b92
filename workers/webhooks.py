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

import httpx
from sqlalchemy.orm import Session

from shared.accounts import service as accounts
from shared.config import Settings
from shared.tasks.models import Task
from shared.tasks.representation import task_json

log = logging.getLogger("studiox.webhooks")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def deliver(session: Session, task_id: uuid.UUID, status: str, settings: Settings) -> bool | None:
    """POST the task's event once. True delivered, False retry later, None nothing to do."""
    task = session.get(Task, task_id)
    if task is None or not task.webhook_url:
        return None
    secret = accounts.webhook_secret(session, task.user_id)
    session.commit()  # keep a secret created just now
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
    try:
        response = httpx.post(
            task.webhook_url,
            content=body,
            headers=headers,
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        log.warning("webhook %s to %s failed: %s", msg_id, task.webhook_url, exc)
        return False
    if 200 <= response.status_code < 300:
        return True
    log.warning("webhook %s to %s answered %s", msg_id, task.webhook_url, response.status_code)
    return False

"""Verify the task webhooks StudioX sends (Standard Webhooks: standardwebhooks.com).

    from studiox_client import verify_webhook, WebhookVerificationError

    @app.post("/studiox-webhook")
    def hook():
        try:
            event = verify_webhook(request.headers, request.get_data(), SECRET)
        except WebhookVerificationError:
            return "", 400
        ...  # event["type"] == "task.succeeded", event["data"] is the task

Pass the body exactly as received (bytes), before any JSON parsing: the signature covers
those bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from studiox_client.errors import WebhookVerificationError

DEFAULT_TOLERANCE_S = 300


def _header(headers: Mapping[str, str], name: str) -> str:
    # Frameworks differ in header case; HTTP says it does not matter.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if not value:
        raise WebhookVerificationError(f"The {name} header is missing.")
    return value


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook's signature and age; return its JSON payload.

    Raises WebhookVerificationError unless one `v1` signature in `webhook-signature` is
    the HMAC-SHA256 (keyed with the `whsec_` secret) of "{webhook-id}.{webhook-timestamp}.
    {body}", and the timestamp is within `tolerance` seconds of now (which stops an old,
    captured request from being replayed).
    """
    msg_id = _header(headers, "webhook-id")
    raw_timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError("The webhook-timestamp header is not a number.") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError("The webhook is too old (or from the future).")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("The secret is not a whsec_ secret.") from None
    payload = body.encode() if isinstance(body, str) else bytes(body)
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several space-separated signatures are allowed (the sender may be rotating secrets).
    for candidate in signatures.split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            break
    else:
        raise WebhookVerificationError("No webhook signature matches.")
    try:
        return json.loads(payload)
    except ValueError:
        raise WebhookVerificationError("The webhook body is not JSON.") from None

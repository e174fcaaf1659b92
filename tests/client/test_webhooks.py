"""verify_webhook accepts what the worker signs (workers.webhooks.sign) and nothing else."""

from __future__ import annotations

import base64
import json
import time

import pytest

from studiox_client import WebhookVerificationError, verify_webhook
from workers.webhooks import sign

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = json.dumps({"type": "task.succeeded", "data": {"id": "t1"}}, separators=(",", ":"))


def signed(body: str = BODY, secret: str = SECRET, msg_id: str = "msg_1", at: int | None = None):
    at = int(time.time()) if at is None else at
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": sign(secret, msg_id, at, body.encode()),
    }


def test_a_genuine_webhook_verifies_and_returns_its_payload():
    event = verify_webhook(signed(), BODY.encode(), SECRET)
    assert event == {"type": "task.succeeded", "data": {"id": "t1"}}


def test_header_case_and_str_bodies_do_not_matter():
    headers = {k.title(): v for k, v in signed().items()}
    assert verify_webhook(headers, BODY, SECRET)["type"] == "task.succeeded"


def test_one_matching_signature_among_several_is_enough():
    headers = signed()
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    verify_webhook(headers, BODY.encode(), SECRET)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"t1", b"t2")),  # body changed
        lambda h, b: ({**h, "webhook-id": "msg_2"}, b),  # id changed
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
        lambda h, b: ({**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
    ],
    ids=["body", "id", "timestamp", "version", "missing-signature"],
)
def test_tampered_webhooks_are_rejected(tamper):
    headers, body = tamper(signed(), BODY.encode())
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body, SECRET)


def test_another_secret_is_rejected():
    other = "whsec_" + base64.b64encode(b"another secret of thirty-two b.").decode()
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(signed(secret=other), BODY.encode(), SECRET)


def test_old_and_future_webhooks_are_rejected():
    old = signed(at=int(time.time()) - 301)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(old, BODY.encode(), SECRET)
    future = signed(at=int(time.time()) + 301)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(future, BODY.encode(), SECRET)
    assert verify_webhook(old, BODY.encode(), SECRET, tolerance=600)

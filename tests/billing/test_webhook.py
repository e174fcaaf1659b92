"""The webhook endpoint: signatures checked for real, events applied exactly once."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import select

from shared.accounts.models import User
from shared.billing.models import Purchase
from tests.billing.conftest import (
    WEBHOOK_SECRET,
    assert_audit_clean,
    balance,
    counts,
    deliver,
    dev_headers,
    event,
)
from tests.billing.fake_stripe import sign


@pytest.fixture()
def paid_event(bclient, auth, stripe_fake):
    """A paid pack session and its completed event (not delivered yet)."""
    headers = auth("signed")
    response = bclient.post(
        "/api/billing/purchase-credits", json={"pack": "credits_100"}, headers=headers
    )
    session_id = response.get_json()["session_id"]
    return headers, event("checkout.session.completed", stripe_fake.pay(session_id))


def _bad_deliveries(evt: dict) -> dict:
    payload = json.dumps(evt)
    now = int(time.time())
    return {
        "wrong_secret": dict(signature=sign(payload, "whsec_someone_else")),
        "tampered_body": dict(
            signature=sign(payload, WEBHOOK_SECRET), body=payload.replace('"paid"', '"PAID"')
        ),
        "old_timestamp": dict(signature=sign(payload, WEBHOOK_SECRET, now - 301)),
        "future_timestamp": dict(signature=sign(payload, WEBHOOK_SECRET, now + 600)),
        "garbage_header": dict(signature="nonsense"),
        "no_v1": dict(signature=f"t={now},v0=abc"),
        "missing_header": dict(signature=None),
        "malformed_json": dict(body="{not json", signed=True),
        "not_an_event": dict(body=json.dumps({"hello": "world"}), signed=True),
        "array_body": dict(body="[1, 2]", signed=True),
        "not_utf8": dict(body=b"\xff\xfe{}", signed=False),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong_secret",
        "tampered_body",
        "old_timestamp",
        "future_timestamp",
        "garbage_header",
        "no_v1",
        "missing_header",
        "malformed_json",
        "not_an_event",
        "array_body",
        "not_utf8",
    ],
)
def test_bad_deliveries_are_400_and_change_nothing(bclient, paid_event, db_session, case):
    headers, evt = paid_event
    spec = _bad_deliveries(evt)[case]
    body = spec.get("body", json.dumps(evt))
    request_headers = {"Content-Type": "application/json"}
    signature = spec.get("signature")
    if spec.get("signed"):
        signature = sign(body, WEBHOOK_SECRET)
    elif spec.get("signed") is False:
        signature = f"t={int(time.time())},v1=00"
    if signature is not None:
        request_headers["Stripe-Signature"] = signature
    before = counts(db_session)

    response = bclient.post("/api/billing/webhook", data=body, headers=request_headers)

    assert response.status_code == 400, (case, response.get_json())
    assert response.get_json()["error"]["code"] in {"invalid_signature", "bad_request"}
    assert counts(db_session) == before
    assert balance(bclient, headers)["purchased_credits"] == 0
    # The genuine delivery still works afterwards.
    assert deliver(bclient, evt).status_code == 200
    assert balance(bclient, headers)["purchased_credits"] == 100


def test_unknown_event_types_are_acknowledged_and_ignored(bclient, db_session):
    before = counts(db_session)
    response = deliver(bclient, event("customer.tax_id.created", {"id": "txi_1"}))
    assert response.status_code == 200
    assert response.get_json() == {"received": True}
    after = counts(db_session)
    assert after["events"] == before["events"] + 1
    assert after["ledger"] == before["ledger"] and after["purchases"] == before["purchases"]


def test_webhook_without_a_secret_is_503_so_stripe_retries(client):
    evt = event("checkout.session.completed", {"id": "cs_x"})
    response = deliver(client, evt)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "billing_not_configured"


def test_events_for_unknown_users_are_acknowledged(bclient, db_session):
    ghost = {
        "id": "cs_test_ghost",
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "amount_total": 900,
        "currency": "usd",
        "metadata": {
            "user_id": "00000000-0000-0000-0000-000000000000",
            "pack_id": "credits_100",
            "credits": "100",
        },
    }
    assert deliver(bclient, event("checkout.session.completed", ghost)).status_code == 200
    assert counts(db_session)["purchases"] == 0


@pytest.mark.slow
def test_the_same_event_delivered_ten_times_concurrently_grants_once(bcommitted, stripe_fake):
    app = bcommitted
    database = app.extensions["studiox"].db
    client = app.test_client()
    headers = dev_headers(app, "racer")
    response = client.post(
        "/api/billing/purchase-credits", json={"pack": "credits_500"}, headers=headers
    )
    assert response.status_code == 200, response.get_json()
    session_id = response.get_json()["session_id"]
    evt = event("checkout.session.completed", stripe_fake.pay(session_id))
    payload = json.dumps(evt)

    barrier = threading.Barrier(10)
    statuses: list[int] = []
    lock = threading.Lock()

    def post():
        own = app.test_client()
        barrier.wait()
        # Each thread signs at its own moment, like Stripe's retries.
        result = own.post(
            "/api/billing/webhook",
            data=payload,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign(payload, WEBHOOK_SECRET),
            },
        )
        with lock:
            statuses.append(result.status_code)

    threads = [threading.Thread(target=post) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert statuses == [200] * 10
    with database.session_scope() as session:
        user = session.execute(select(User).where(User.clerk_id == "racer")).scalar_one()
        assert user.purchased_credits == 500
        assert len(session.execute(select(Purchase)).scalars().all()) == 1
        assert counts(session)["events"] == 1
        assert_audit_clean(session)


@pytest.mark.slow
def test_concurrent_fulfil_and_webhooks_grant_once(bcommitted, stripe_fake):
    app = bcommitted
    database = app.extensions["studiox"].db
    headers = dev_headers(app, "racer2")
    client = app.test_client()
    session_id = client.post(
        "/api/billing/purchase-credits", json={"pack": "credits_100"}, headers=headers
    ).get_json()["session_id"]
    paid = stripe_fake.pay(session_id)
    # Different event ids for the same session: only the purchase row can stop them.
    events = [event("checkout.session.completed", paid) for _ in range(5)]
    barrier = threading.Barrier(10)
    statuses: list[int] = []

    def webhook(evt):
        own = app.test_client()
        barrier.wait()
        statuses.append(deliver(own, evt).status_code)

    def fulfil():
        own = app.test_client()
        barrier.wait()
        statuses.append(
            own.post(
                "/api/billing/fulfill", json={"session_id": session_id}, headers=headers
            ).status_code
        )

    threads = [threading.Thread(target=webhook, args=(e,)) for e in events]
    threads += [threading.Thread(target=fulfil) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert statuses == [200] * 10
    with database.session_scope() as session:
        user = session.execute(select(User).where(User.clerk_id == "racer2")).scalar_one()
        assert user.purchased_credits == 100
        assert_audit_clean(session)

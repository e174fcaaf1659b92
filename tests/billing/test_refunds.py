"""Refunds claw purchased credits back, in proportion, once, never below zero."""

from __future__ import annotations

import uuid

import pytest

from shared.credits import service as credits
from tests.billing.conftest import assert_audit_clean, balance, deliver, event, user_of


@pytest.fixture()
def bought(bclient, auth, stripe_fake, db_session):
    """A user who paid for the 100-credit pack ($9.00)."""
    headers = auth("refundee")
    session_id = bclient.post(
        "/api/billing/purchase-credits", json={"pack": "credits_100"}, headers=headers
    ).get_json()["session_id"]
    paid = stripe_fake.pay(session_id)
    deliver(bclient, event("checkout.session.completed", paid))
    assert balance(bclient, headers)["purchased_credits"] == 100
    return headers, user_of(db_session, "refundee"), paid["payment_intent"]


def charge(payment_intent: str, refunded: int, amount: int = 900) -> dict:
    return {
        "id": "ch_test_1",
        "object": "charge",
        "payment_intent": payment_intent,
        "amount": amount,
        "amount_refunded": refunded,
        "refunded": refunded >= amount,
        "currency": "usd",
    }


def purchase_row(client, headers) -> dict:
    [row] = client.get("/api/billing/history", headers=headers).get_json()["items"]
    return row


def test_partial_then_full_refund_claws_back_proportionally_and_once(bclient, bought, db_session):
    headers, _user, payment_intent = bought
    half = event("charge.refunded", charge(payment_intent, 450))
    for _ in range(2):
        assert deliver(bclient, half).status_code == 200
    assert balance(bclient, headers)["purchased_credits"] == 50
    row = purchase_row(bclient, headers)
    assert (row["status"], row["refunded_credits"]) == ("partially_refunded", 50)

    # A second event with the same cumulative amount (another delivery path) takes nothing.
    deliver(bclient, event("charge.refunded", charge(payment_intent, 450)))
    assert balance(bclient, headers)["purchased_credits"] == 50

    deliver(bclient, event("charge.refunded", charge(payment_intent, 900)))
    assert balance(bclient, headers)["purchased_credits"] == 0
    row = purchase_row(bclient, headers)
    assert (row["status"], row["refunded_credits"]) == ("refunded", 100)
    ledger = bclient.get("/api/users/transactions", headers=headers).get_json()["items"]
    chargebacks = [r["delta"] for r in ledger if r["reason"] == "chargeback"]
    assert chargebacks == [-50, -50]
    # An older, smaller refund event arriving late changes nothing.
    deliver(bclient, event("charge.refunded", charge(payment_intent, 450)))
    assert balance(bclient, headers)["purchased_credits"] == 0
    assert_audit_clean(db_session)


def test_refund_never_takes_the_balance_below_zero(bclient, bought, db_session):
    headers, user, payment_intent = bought
    # Spend the 10 plan credits and 95 of the purchased ones.
    credits.charge_task(db_session, user.id, uuid.uuid4(), 105)
    assert balance(bclient, headers)["purchased_credits"] == 5

    deliver(bclient, event("charge.refunded", charge(payment_intent, 900)))
    body = balance(bclient, headers)
    assert (body["plan_credits"], body["purchased_credits"]) == (0, 0)
    ledger = bclient.get("/api/users/transactions", headers=headers).get_json()["items"]
    assert (ledger[0]["reason"], ledger[0]["delta"], ledger[0]["balance_after"]) == (
        "chargeback",
        -5,
        0,
    )
    assert purchase_row(bclient, headers)["status"] == "refunded"
    assert_audit_clean(db_session)


def test_refund_of_an_unknown_payment_is_acknowledged(bclient, bought, db_session):
    headers, _user, _pi = bought
    response = deliver(bclient, event("charge.refunded", charge("pi_someone_else", 900)))
    assert response.status_code == 200
    assert balance(bclient, headers)["purchased_credits"] == 100
    assert_audit_clean(db_session)

"""Plan subscriptions: Checkout, portal, and subscription events in any order."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from shared.accounts.models import Plan
from shared.credits import service as credits
from tests.billing.conftest import assert_audit_clean, balance, deliver, event, user_of

NOW = int(time.time())
PERIOD_END = NOW + 30 * 24 * 3600


def subscribe(client, headers, plan="pro"):
    response = client.post("/api/billing/subscribe", json={"plan": plan}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def subscription(
    user,
    plan_id: str,
    *,
    status="active",
    sub_id="sub_test_1",
    price_id: str | None = None,
    period_end: int = PERIOD_END,
) -> dict:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": user.stripe_customer_id,
        "status": status,
        "metadata": {"user_id": str(user.id), "plan_id": plan_id},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_test_1",
                    "price": {"id": price_id or f"price_inline_{uuid.uuid4().hex[:8]}"},
                    "current_period_end": period_end,
                }
            ],
        },
    }


@pytest.fixture()
def subscriber(bclient, auth, db_session):
    """A free user who went through subscription Checkout (so has a Stripe customer)."""
    headers = auth("subscriber")
    subscribe(bclient, headers)
    return headers, user_of(db_session, "subscriber")


def state(client, headers) -> tuple[str, int, int]:
    body = balance(client, headers)
    return body["plan"], body["plan_credits"], body["purchased_credits"]


def test_subscribe_checkout_carries_an_inline_monthly_price_and_plan_metadata(
    bclient, auth, stripe_fake, db_session
):
    body = subscribe(bclient, auth("sub_req"))
    user = user_of(db_session, "sub_req")
    [call] = stripe_fake.calls("POST", "/v1/checkout/sessions")
    assert body["session_id"] == stripe_fake.sessions[body["session_id"]]["id"]
    params = call.params
    assert params["mode"] == "subscription"
    assert params["customer"] == user.stripe_customer_id
    assert params["line_items"] == [
        {
            "quantity": "1",
            "price_data": {
                "currency": "usd",
                "unit_amount": "1900",
                "recurring": {"interval": "month"},
                "product_data": {"name": "StudioX Pro"},
            },
        }
    ]
    assert params["subscription_data"]["metadata"] == {"user_id": str(user.id), "plan_id": "pro"}
    # Nothing changes before Stripe reports the subscription.
    assert state(bclient, auth("sub_req")) == ("free", 10, 0)


def test_subscribe_uses_the_plans_stripe_price_when_set(bclient, auth, stripe_fake, db_session):
    db_session.execute(
        update(Plan).where(Plan.id == "enterprise").values(stripe_price_id="price_enterprise")
    )
    subscribe(bclient, auth("sub_price"), plan="enterprise")
    [call] = stripe_fake.calls("POST", "/v1/checkout/sessions")
    assert call.params["line_items"] == [{"price": "price_enterprise", "quantity": "1"}]


@pytest.mark.parametrize("plan", ["free", "platinum", ""])
def test_subscribing_to_free_or_unknown_plans_is_422(bclient, auth, stripe_fake, plan):
    response = bclient.post("/api/billing/subscribe", json={"plan": plan}, headers=auth("s422"))
    assert response.status_code == 422
    assert stripe_fake.calls("POST", "/v1/checkout/sessions") == []


def test_portal_needs_a_customer_then_links_to_it(bclient, auth, stripe_fake, db_session):
    headers = auth("portal_user")
    response = bclient.post("/api/billing/portal", headers=headers)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"

    subscribe(bclient, headers)
    response = bclient.post("/api/billing/portal", headers=headers)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["url"].startswith("https://billing.stripe.test/p/session/")
    [call] = stripe_fake.calls("POST", "/v1/billing_portal/sessions")
    assert call.params["customer"] == user_of(db_session, "portal_user").stripe_customer_id
    assert call.params["return_url"] == "http://localhost:5173/billing"


def test_upgrade_downgrade_and_cancel(bclient, subscriber, db_session):
    headers, user = subscriber
    # Spend some free credits first: the upgrade tops plan credits up to the allowance.
    credits.charge_task(db_session, user.id, uuid.uuid4(), 4)
    assert state(bclient, headers) == ("free", 6, 0)

    created = event("customer.subscription.created", subscription(user, "pro"), created=NOW)
    assert deliver(bclient, created).status_code == 200
    assert state(bclient, headers) == ("pro", 500, 0)
    refreshed = user_of(db_session, "subscriber")
    assert refreshed.subscription_status == "active"
    assert refreshed.stripe_subscription_id == "sub_test_1"
    assert refreshed.credits_reset_at == datetime.fromtimestamp(PERIOD_END, UTC) + timedelta(days=1)
    # Resets count from Stripe's dates from now on (if the subscription ends, too).
    assert refreshed.credits_reset_anchor == refreshed.credits_reset_at

    deliver(
        bclient,
        event("customer.subscription.updated", subscription(user, "enterprise"), created=NOW + 10),
    )
    assert state(bclient, headers) == ("enterprise", 5000, 0)

    credits.charge_task(db_session, user.id, uuid.uuid4(), 100)  # 4900 left
    deliver(
        bclient, event("customer.subscription.updated", subscription(user, "pro"), created=NOW + 20)
    )
    assert state(bclient, headers) == ("pro", 500, 0)  # capped at the smaller allowance

    deliver(
        bclient,
        event(
            "customer.subscription.deleted",
            subscription(user, "pro", status="canceled"),
            created=NOW + 30,
        ),
    )
    assert state(bclient, headers) == ("free", 10, 0)
    assert user_of(db_session, "subscriber").subscription_status == "canceled"
    # Cancelled: a new subscription Checkout is allowed again.
    assert (
        bclient.post("/api/billing/subscribe", json={"plan": "pro"}, headers=headers).status_code
        == 200
    )
    assert_audit_clean(db_session)


def test_the_price_id_decides_the_plan_when_operators_set_it(bclient, subscriber, db_session):
    headers, user = subscriber
    db_session.execute(
        update(Plan).where(Plan.id == "enterprise").values(stripe_price_id="price_ent")
    )
    # Changed in the portal: the metadata still says pro, the price is enterprise's.
    sub = subscription(user, "pro", price_id="price_ent")
    deliver(bclient, event("customer.subscription.updated", sub, created=NOW))
    assert state(bclient, headers)[0] == "enterprise"


def test_live_subscription_blocks_a_second_checkout(bclient, subscriber, stripe_fake):
    headers, user = subscriber
    deliver(bclient, event("customer.subscription.created", subscription(user, "pro")))
    response = bclient.post("/api/billing/subscribe", json={"plan": "enterprise"}, headers=headers)
    assert response.status_code == 409


def test_incomplete_subscription_waits_for_payment(bclient, subscriber, db_session):
    headers, user = subscriber
    deliver(
        bclient,
        event(
            "customer.subscription.created",
            subscription(user, "pro", status="incomplete"),
            created=NOW,
        ),
    )
    assert state(bclient, headers) == ("free", 10, 0)
    deliver(
        bclient, event("customer.subscription.updated", subscription(user, "pro"), created=NOW + 5)
    )
    assert state(bclient, headers) == ("pro", 500, 0)
    deliver(
        bclient,
        event(
            "customer.subscription.updated",
            subscription(user, "pro", status="unpaid"),
            created=NOW + 50,
        ),
    )
    assert state(bclient, headers) == ("free", 10, 0)
    assert_audit_clean(db_session)


def test_late_created_after_deleted_does_not_resurrect_the_plan(bclient, subscriber, db_session):
    headers, user = subscriber
    created = event("customer.subscription.created", subscription(user, "pro"), created=NOW)
    updated = event(
        "customer.subscription.updated", subscription(user, "enterprise"), created=NOW + 5
    )
    deleted = event(
        "customer.subscription.deleted",
        subscription(user, "enterprise", status="canceled"),
        created=NOW + 10,
    )
    for evt in (deleted, updated, created):
        assert deliver(bclient, evt).status_code == 200
    assert state(bclient, headers) == ("free", 10, 0)
    # Same second as the deletion: the canceled state is terminal anyway.
    same_second = event(
        "customer.subscription.updated", subscription(user, "pro"), created=NOW + 10
    )
    deliver(bclient, same_second)
    assert state(bclient, headers) == ("free", 10, 0)
    assert_audit_clean(db_session)


def test_out_of_order_updates_end_in_the_newest_plan(bclient, subscriber, db_session):
    headers, user = subscriber
    created = event("customer.subscription.created", subscription(user, "pro"), created=NOW)
    to_enterprise = event(
        "customer.subscription.updated", subscription(user, "enterprise"), created=NOW + 5
    )
    back_to_pro = event("customer.subscription.updated", subscription(user, "pro"), created=NOW + 9)
    for evt in (back_to_pro, created, to_enterprise, back_to_pro, created):
        assert deliver(bclient, evt).status_code == 200
    assert state(bclient, headers) == ("pro", 500, 0)
    assert_audit_clean(db_session)


def test_an_old_subscription_ending_does_not_end_the_new_one(bclient, subscriber, db_session):
    headers, user = subscriber
    deliver(
        bclient,
        event(
            "customer.subscription.created",
            subscription(user, "pro", sub_id="sub_old"),
            created=NOW,
        ),
    )
    deliver(
        bclient,
        event(
            "customer.subscription.created",
            subscription(user, "enterprise", sub_id="sub_new"),
            created=NOW + 5,
        ),
    )
    # The old one's deletion arrives last, in the same second as the new one's creation.
    deliver(
        bclient,
        event(
            "customer.subscription.deleted",
            subscription(user, "pro", sub_id="sub_old", status="canceled"),
            created=NOW + 5,
        ),
    )
    assert state(bclient, headers) == ("enterprise", 5000, 0)
    assert user_of(db_session, "subscriber").stripe_subscription_id == "sub_new"
    assert_audit_clean(db_session)


def invoice(
    user,
    *,
    billing_reason="subscription_cycle",
    sub_id="sub_test_1",
    period_end=PERIOD_END + 30 * 24 * 3600,
) -> dict:
    return {
        "id": f"in_test_{uuid.uuid4().hex[:8]}",
        "object": "invoice",
        "customer": user.stripe_customer_id,
        "billing_reason": billing_reason,
        "status": "paid",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub_id},
        },
        "lines": {"data": [{"period": {"start": PERIOD_END, "end": period_end}}]},
    }


def test_renewal_invoice_resets_plan_credits_once_per_event(bclient, subscriber, db_session):
    headers, user = subscriber
    deliver(bclient, event("customer.subscription.created", subscription(user, "pro"), created=NOW))
    credits.charge_task(db_session, user.id, uuid.uuid4(), 120)
    assert state(bclient, headers) == ("pro", 380, 0)

    renewal = event("invoice.paid", invoice(user))
    for _ in range(3):
        assert deliver(bclient, renewal).status_code == 200
    assert state(bclient, headers) == ("pro", 500, 0)
    refreshed = user_of(db_session, "subscriber")
    expected = datetime.fromtimestamp(PERIOD_END + 30 * 24 * 3600, UTC) + timedelta(days=1)
    assert refreshed.credits_reset_at == expected
    ledger = bclient.get("/api/users/transactions", headers=headers).get_json()["items"]
    assert (ledger[0]["reason"], ledger[0]["delta"], ledger[0]["bucket"]) == (
        "monthly_reset",
        120,
        "plan",
    )

    # The first invoice of a subscription does not add to the plan change's top-up, and
    # an invoice for a subscription that is not the live one is ignored.
    credits.charge_task(db_session, user.id, uuid.uuid4(), 50)
    deliver(bclient, event("invoice.paid", invoice(user, billing_reason="subscription_create")))
    deliver(bclient, event("invoice.paid", invoice(user, sub_id="sub_other")))
    assert state(bclient, headers) == ("pro", 450, 0)
    assert_audit_clean(db_session)


def test_renewal_after_cancel_grants_nothing(bclient, subscriber, db_session):
    headers, user = subscriber
    deliver(bclient, event("customer.subscription.created", subscription(user, "pro"), created=NOW))
    deliver(
        bclient,
        event(
            "customer.subscription.deleted",
            subscription(user, "pro", status="canceled"),
            created=NOW + 1,
        ),
    )
    credits.charge_task(db_session, user.id, uuid.uuid4(), 3)
    deliver(bclient, event("invoice.paid", invoice(user)))
    assert state(bclient, headers) == ("free", 7, 0)
    assert_audit_clean(db_session)

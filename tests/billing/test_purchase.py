"""Buying credit packs: the Checkout request, fulfilment by webhook and by redirect."""

from __future__ import annotations

import pytest

from tests.billing.conftest import (
    assert_audit_clean,
    balance,
    counts,
    deliver,
    event,
    user_of,
)


def buy(client, headers, **body):
    response = client.post("/api/billing/purchase-credits", json=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_purchase_creates_a_checkout_session_with_price_customer_and_metadata(
    bclient, auth, stripe_fake, db_session
):
    headers = auth("buyer")
    body = buy(bclient, headers, pack="credits_500")
    assert body["session_id"].startswith("cs_")
    assert body["checkout_url"] == stripe_fake.sessions[body["session_id"]]["url"]

    user = user_of(db_session, "buyer")
    [customer_call] = stripe_fake.calls("POST", "/v1/customers")
    assert customer_call.params["metadata"]["user_id"] == str(user.id)
    assert customer_call.headers["Authorization"] == "Bearer sk_test_fake"
    assert [user.stripe_customer_id] == list(stripe_fake.customers)

    [call] = stripe_fake.calls("POST", "/v1/checkout/sessions")
    params = call.params
    assert params["mode"] == "payment"
    assert params["customer"] == user.stripe_customer_id
    assert params["line_items"] == [
        {
            "quantity": "1",
            "price_data": {
                "currency": "usd",
                "unit_amount": "3900",
                "product_data": {"name": "500 StudioX credits"},
            },
        }
    ]
    expected_metadata = {"user_id": str(user.id), "pack_id": "credits_500", "credits": "500"}
    assert params["metadata"] == expected_metadata
    assert params["payment_intent_data"]["metadata"] == expected_metadata
    assert params["success_url"] == (
        "http://localhost:5173/billing/success?session_id={CHECKOUT_SESSION_ID}"
    )
    assert params["cancel_url"] == "http://localhost:5173/billing/cancel"
    # Nothing is granted before payment.
    assert balance(bclient, headers)["purchased_credits"] == 0


def test_second_purchase_reuses_the_customer_and_credits_amount_picks_the_pack(
    bclient, auth, stripe_fake
):
    headers = auth("buyer2")
    buy(bclient, headers, pack="credits_100")
    buy(bclient, headers, credits=2000)
    assert len(stripe_fake.calls("POST", "/v1/customers")) == 1
    first, second = stripe_fake.calls("POST", "/v1/checkout/sessions")
    assert first.params["customer"] == second.params["customer"]
    assert second.params["metadata"]["pack_id"] == "credits_2000"
    assert second.params["line_items"][0]["price_data"]["unit_amount"] == "12900"


@pytest.mark.parametrize(
    "body",
    [
        {"pack": "credits_7"},
        {"credits": 7},
        {"credits": "100"},
        {},
        {"pack": "credits_100", "credits": 100},
    ],
)
def test_unknown_or_ambiguous_pack_is_422(bclient, auth, stripe_fake, body):
    response = bclient.post("/api/billing/purchase-credits", json=body, headers=auth("b3"))
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["code"] == "validation_error"
    assert stripe_fake.calls("POST", "/v1/checkout/sessions") == []


def test_without_a_stripe_key_billing_is_503(client, auth):
    for path, body in (
        ("/api/billing/purchase-credits", {"pack": "credits_100"}),
        ("/api/billing/subscribe", {"plan": "pro"}),
        ("/api/billing/portal", None),
        ("/api/billing/fulfill", {"session_id": "cs_test_1"}),
    ):
        response = client.post(path, json=body, headers=auth("nokey"))
        assert response.status_code == 503, (path, response.get_json())
        assert response.get_json()["error"]["code"] == "billing_not_configured"


def test_stripe_outage_is_503_not_500(bclient, auth, stripe_fake):
    stripe_fake.fail_with = 500
    response = bclient.post(
        "/api/billing/purchase-credits", json={"pack": "credits_100"}, headers=auth("outage")
    )
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "service_unavailable"


def test_signed_completed_event_grants_the_pack_once(bclient, auth, stripe_fake, db_session):
    headers = auth("payer")
    session_id = buy(bclient, headers, pack="credits_100")["session_id"]
    evt = event("checkout.session.completed", stripe_fake.pay(session_id))
    for _ in range(3):
        response = deliver(bclient, evt)
        assert response.status_code == 200, response.get_json()
        assert response.get_json() == {"received": True}

    credits_now = balance(bclient, headers)
    assert credits_now["purchased_credits"] == 100
    assert credits_now["total"] == 110  # + the free plan's 10
    assert counts(db_session)["purchases"] == 1
    history = bclient.get("/api/billing/history", headers=headers).get_json()
    [purchase] = history["items"]
    assert purchase["session_id"] == session_id
    assert purchase["status"] == "paid" and purchase["credits"] == 100
    assert purchase["amount_cents"] == 900 and purchase["pack"] == "credits_100"
    ledger = bclient.get("/api/users/transactions", headers=headers).get_json()["items"]
    assert [(row["reason"], row["delta"]) for row in ledger][0] == ("purchase", 100)
    assert_audit_clean(db_session)


def test_the_same_session_in_two_different_events_grants_once(
    bclient, auth, stripe_fake, db_session
):
    headers = auth("twice")
    session_id = buy(bclient, headers, pack="credits_100")["session_id"]
    paid = stripe_fake.pay(session_id)
    deliver(bclient, event("checkout.session.completed", paid))
    deliver(bclient, event("checkout.session.async_payment_succeeded", paid))
    assert balance(bclient, headers)["purchased_credits"] == 100
    assert_audit_clean(db_session)


def test_unpaid_session_grants_nothing_until_the_async_payment_succeeds(
    bclient, auth, stripe_fake, db_session
):
    headers = auth("sepa")
    session_id = buy(bclient, headers, pack="credits_500")["session_id"]
    unpaid = dict(stripe_fake.pay(session_id, payment_status="unpaid"))
    assert deliver(bclient, event("checkout.session.completed", unpaid)).status_code == 200
    assert balance(bclient, headers)["purchased_credits"] == 0
    [pending] = bclient.get("/api/billing/history", headers=headers).get_json()["items"]
    assert pending["status"] == "pending"

    paid = stripe_fake.pay(session_id)
    succeeded = event("checkout.session.async_payment_succeeded", paid)
    assert deliver(bclient, succeeded).status_code == 200
    assert deliver(bclient, succeeded).status_code == 200
    assert balance(bclient, headers)["purchased_credits"] == 500
    [done] = bclient.get("/api/billing/history", headers=headers).get_json()["items"]
    assert done["status"] == "paid"
    assert_audit_clean(db_session)


def test_async_payment_failure_marks_the_purchase_failed(bclient, auth, stripe_fake, db_session):
    headers = auth("sepa_fail")
    session_id = buy(bclient, headers, pack="credits_100")["session_id"]
    unpaid = dict(stripe_fake.pay(session_id, payment_status="unpaid"))
    deliver(bclient, event("checkout.session.completed", unpaid))
    deliver(bclient, event("checkout.session.async_payment_failed", unpaid))
    [purchase] = bclient.get("/api/billing/history", headers=headers).get_json()["items"]
    assert purchase["status"] == "failed"
    assert balance(bclient, headers)["purchased_credits"] == 0
    assert_audit_clean(db_session)


@pytest.mark.parametrize("webhook_first", [True, False])
def test_fulfil_path_and_webhook_grant_once_in_total(
    bclient, auth, stripe_fake, db_session, webhook_first
):
    headers = auth("redirect")
    session_id = buy(bclient, headers, pack="credits_100")["session_id"]

    response = bclient.post(
        "/api/billing/fulfill", json={"session_id": session_id}, headers=headers
    )
    assert response.status_code == 200
    assert response.get_json() == {"session_id": session_id, "status": "open", "purchase": None}

    paid = stripe_fake.pay(session_id)
    completed = event("checkout.session.completed", paid)
    if webhook_first:
        deliver(bclient, completed)
    for _ in range(2):
        response = bclient.post(
            "/api/billing/fulfill", json={"session_id": session_id}, headers=headers
        )
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["status"] == "paid"
        assert body["purchase"]["credits"] == 100
    if not webhook_first:
        deliver(bclient, completed)

    assert balance(bclient, headers)["purchased_credits"] == 100
    assert counts(db_session)["purchases"] == 1
    assert_audit_clean(db_session)


def test_fulfil_refuses_someone_elses_or_an_unknown_session(bclient, auth, stripe_fake):
    session_id = buy(bclient, auth("owner"), pack="credits_100")["session_id"]
    stripe_fake.pay(session_id)
    response = bclient.post(
        "/api/billing/fulfill", json={"session_id": session_id}, headers=auth("thief")
    )
    assert response.status_code == 404
    assert balance(bclient, auth("thief"))["purchased_credits"] == 0
    response = bclient.post(
        "/api/billing/fulfill", json={"session_id": "cs_test_nope"}, headers=auth("owner")
    )
    assert response.status_code == 404
    response = bclient.post(
        "/api/billing/fulfill", json={"session_id": "not a session"}, headers=auth("owner")
    )
    assert response.status_code == 422


def test_history_lists_purchases_newest_first_with_pages(bclient, auth, stripe_fake, db_session):
    headers = auth("collector")
    ids = []
    for pack in ("credits_100", "credits_500", "credits_2000"):
        session_id = buy(bclient, headers, pack=pack)["session_id"]
        deliver(bclient, event("checkout.session.completed", stripe_fake.pay(session_id)))
        ids.append(session_id)
    first = bclient.get("/api/billing/history?limit=2", headers=headers).get_json()
    assert [p["session_id"] for p in first["items"]] == [ids[2], ids[1]]
    assert first["next_cursor"]
    second = bclient.get(
        f"/api/billing/history?limit=2&cursor={first['next_cursor']}", headers=headers
    ).get_json()
    assert [p["session_id"] for p in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None
    assert bclient.get("/api/billing/history", headers=auth("other")).get_json() == {
        "items": [],
        "next_cursor": None,
    }
    bad = bclient.get("/api/billing/history?cursor=zzz", headers=headers)
    assert bad.status_code == 422
    assert balance(bclient, headers)["purchased_credits"] == 2600
    assert_audit_clean(db_session)

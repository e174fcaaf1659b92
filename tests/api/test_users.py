from __future__ import annotations

import uuid

from sqlalchemy import select

from shared.credits.models import CreditLedger


def test_initialize_is_201_then_200_and_grants_once(client, auth, db_session):
    first = client.post(
        "/api/users/initialize",
        headers=auth(
            "user_new",
        ),
    )
    assert first.status_code == 201
    second = client.post("/api/users/initialize", headers=auth("user_new"))
    assert second.status_code == 200
    assert first.get_json()["id"] == second.get_json()["id"]
    user_id = uuid.UUID(first.get_json()["id"])
    rows = (
        db_session.execute(select(CreditLedger).where(CreditLedger.user_id == user_id))
        .scalars()
        .all()
    )
    assert [(r.reason, r.bucket, r.delta, r.balance_after) for r in rows] == [
        ("signup_grant", "plan", 10, 10)
    ]


def test_me_has_the_api_shape(client, auth):
    body = client.get("/api/users/me", headers=auth("user_shape")).get_json()
    assert set(body) == {"id", "clerk_id", "email", "name", "plan", "credits", "created_at"}
    assert set(body["credits"]) == {"total", "plan_credits", "purchased_credits", "next_reset_at"}
    assert body["created_at"].endswith("Z")
    assert body["credits"] == {
        "total": 10,
        "plan_credits": 10,
        "purchased_credits": 0,
        "next_reset_at": body["credits"]["next_reset_at"],
    }


def test_credits_has_the_api_shape(client, auth):
    body = client.get("/api/users/credits", headers=auth("user_credits")).get_json()
    assert body["total"] == 10
    assert body["plan"] == "free"
    assert body["monthly_credits"] == 10
    assert set(body) == {
        "total",
        "plan_credits",
        "purchased_credits",
        "plan",
        "monthly_credits",
        "next_reset_at",
    }


def test_initialize_refreshes_profile_claims(client, token):
    client.post("/api/users/initialize", headers={"Authorization": f"Bearer {token('u_prof')}"})
    response = client.post(
        "/api/users/initialize",
        headers={"Authorization": f"Bearer {token('u_prof', email='new@x.io', name='New')}"},
    )
    assert response.status_code == 200
    assert response.get_json()["email"] == "new@x.io"
    assert response.get_json()["name"] == "New"


def test_transactions_newest_first_and_paginated(client, auth, db_session):
    from shared.accounts.service import find_user_id
    from shared.credits import service as credits

    client.post("/api/users/initialize", headers=auth("u_tx"))
    user_id = find_user_id(db_session, "u_tx")
    for n in range(1, 6):
        credits.grant(db_session, user_id, n, "admin_grant")
    db_session.flush()
    page1 = client.get("/api/users/transactions?limit=4", headers=auth("u_tx")).get_json()
    assert [e["delta"] for e in page1["items"]] == [5, 4, 3, 2]
    assert set(page1["items"][0]) == {
        "id",
        "delta",
        "bucket",
        "reason",
        "task_id",
        "balance_after",
        "created_at",
    }
    assert page1["next_cursor"]
    page2 = client.get(
        f"/api/users/transactions?limit=4&cursor={page1['next_cursor']}", headers=auth("u_tx")
    ).get_json()
    assert [e["delta"] for e in page2["items"]] == [1, 10]
    assert page2["next_cursor"] is None
    assert page1["items"][0]["balance_after"] == 25


def test_transactions_are_only_the_callers(client, auth):
    client.post("/api/users/initialize", headers=auth("u_a"))
    client.post("/api/users/initialize", headers=auth("u_b"))
    items = client.get("/api/users/transactions", headers=auth("u_b")).get_json()["items"]
    assert len(items) == 1


def test_transactions_bad_limit_and_cursor_are_422(client, auth):
    for query in ("limit=0", "limit=101", "limit=abc", "cursor=zzz"):
        response = client.get(f"/api/users/transactions?{query}", headers=auth())
        assert response.status_code == 422, query
        assert response.get_json()["error"]["code"] == "validation_error"


def test_webhook_secret_is_stable(client, auth):
    first = client.get("/api/users/webhook-secret", headers=auth("u_wh")).get_json()
    second = client.get("/api/users/webhook-secret", headers=auth("u_wh")).get_json()
    assert first["secret"].startswith("whsec_")
    assert first == second
    other = client.get("/api/users/webhook-secret", headers=auth("u_wh2")).get_json()
    assert other["secret"] != first["secret"]

"""The task endpoints, in-process: validation, charging, idempotency, listing, cancel."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from shared.accounts.service import find_user_id
from shared.credits import service as credits
from shared.credits.models import CreditLedger
from shared.tasks import service as lifecycle

ECHO = {"type": "echo", "input": {"message": "hi"}}


def balance(client, auth, sub="user_test"):
    return client.get("/api/users/credits", headers=auth(sub)).get_json()["total"]


def test_create_charges_queues_and_sends_after_commit(client, auth, sent, db_session):
    response = client.post("/api/tasks", json=ECHO, headers=auth())
    assert response.status_code == 202, response.get_json()
    task = response.get_json()
    assert response.headers["Location"] == f"/api/tasks/{task['id']}"
    assert task["status"] == "queued" and task["cost"] == 1 and task["progress"] == 0
    assert set(task) >= {
        "id",
        "type",
        "status",
        "input",
        "output",
        "error",
        "progress",
        "cost",
        "created_at",
        "started_at",
        "completed_at",
        "artifacts",
    }
    assert balance(client, auth) == 9
    assert [(m.name, m.task_id) for m in sent] == [("studiox.run_task", task["id"])]
    rows = (
        db_session.execute(
            select(CreditLedger).where(CreditLedger.task_id == uuid.UUID(task["id"]))
        )
        .scalars()
        .all()
    )
    assert [(r.reason, r.delta, r.balance_after) for r in rows] == [("task_charge", -1, 9)]


def test_legacy_create_path_is_the_same(client, auth, sent):
    response = client.post("/api/tasks/create", json=ECHO, headers=auth())
    assert response.status_code == 202
    assert balance(client, auth) == 9


def test_insufficient_credits_is_402_with_details_and_charges_nothing(client, auth, sent):
    pricey = {"type": "echo_pricey", "input": {}}  # costs 7 of the free plan's 10
    assert client.post("/api/tasks", json=pricey, headers=auth()).status_code == 202
    response = client.post("/api/tasks", json=pricey, headers=auth())
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["code"] == "insufficient_credits"
    assert error["details"] == {"required": 7, "available": 3}
    assert balance(client, auth) == 3
    assert len(sent) == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"type": "nope", "input": {}}, "type"),
        ({"input": {}}, "type"),
        ({"type": "echo"}, "input"),
        ({"type": "echo", "input": []}, "input"),
        ({"type": "echo", "input": {"steps": 0}}, "input"),
        ({"type": "echo", "input": {}, "extra": 1}, "extra"),
        ({"type": "echo", "input": {}, "webhook_url": "ftp://x"}, "webhook_url"),
        ({"type": "echo", "input": {}, "webhook_events": ["exploded"]}, "webhook_events"),
        ({"type": "image_analysis", "input": {}}, "input"),
        ({"type": "image_analysis", "input": {"image_url": "file:///etc/passwd"}}, "input"),
        ({"type": "image_analysis", "input": {"image_base64": "***"}}, "input"),
        (
            {"type": "advanced_editing", "input": {"image_base64": "aGk=", "operations": []}},
            "input",
        ),
        (
            {
                "type": "advanced_editing",
                "input": {"image_base64": "aGk=", "operations": [{"op": "resize"}]},
            },
            "input",
        ),
        ({"type": "video_generation", "input": {"prompt": "x", "fps": 0}}, "input"),
        ({"type": "video_generation", "input": {"prompt": "x", "width": 4000}}, "input"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_charges_nothing(client, auth, sent, body, field):
    response = client.post("/api/tasks", json=body, headers=auth())
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]
    assert balance(client, auth) == 10
    assert sent == []


def test_idempotency_key_replays_without_a_second_charge(client, auth, sent):
    headers = auth(**{"Idempotency-Key": "key-1"})
    first = client.post("/api/tasks", json=ECHO, headers=headers)
    second = client.post("/api/tasks", json=ECHO, headers=headers)
    assert first.status_code == 202 and second.status_code == 200
    assert first.get_json()["id"] == second.get_json()["id"]
    assert balance(client, auth) == 9
    assert len(sent) == 1


def test_idempotency_key_with_another_body_is_409(client, auth, sent):
    headers = auth(**{"Idempotency-Key": "key-2"})
    client.post("/api/tasks", json=ECHO, headers=headers)
    other = client.post(
        "/api/tasks", json={"type": "echo", "input": {"message": "other"}}, headers=headers
    )
    assert other.status_code == 409
    assert other.get_json()["error"]["code"] == "conflict"
    assert balance(client, auth) == 9


def test_idempotency_keys_are_per_user(client, auth, sent):
    a = client.post("/api/tasks", json=ECHO, headers=auth("ua", **{"Idempotency-Key": "same"}))
    b = client.post("/api/tasks", json=ECHO, headers=auth("ub", **{"Idempotency-Key": "same"}))
    assert a.status_code == b.status_code == 202
    assert a.get_json()["id"] != b.get_json()["id"]


def test_concurrency_limit_is_429_with_retry_after_and_charges_nothing(client, auth, sent):
    for _ in range(2):  # the free plan runs 2 at once
        assert client.post("/api/tasks", json=ECHO, headers=auth()).status_code == 202
    third = client.post("/api/tasks", json=ECHO, headers=auth())
    assert third.status_code == 429
    assert third.get_json()["error"]["code"] == "rate_limited"
    assert third.headers["Retry-After"]
    assert balance(client, auth) == 8


def test_get_task_and_someone_elses_is_404(client, auth, sent):
    task = client.post("/api/tasks", json=ECHO, headers=auth("owner")).get_json()
    assert client.get(f"/api/tasks/{task['id']}", headers=auth("owner")).status_code == 200
    other = client.get(f"/api/tasks/{task['id']}", headers=auth("intruder"))
    assert other.status_code == 404
    assert other.get_json()["error"]["code"] == "not_found"
    assert client.get("/api/tasks/not-a-uuid", headers=auth("owner")).status_code == 404
    assert (
        client.post(f"/api/tasks/{task['id']}/cancel", headers=auth("intruder")).status_code == 404
    )


def test_cancel_queued_refunds_at_once_and_cancel_again_is_409(client, auth, sent, db_session):
    task = client.post("/api/tasks", json=ECHO, headers=auth()).get_json()
    response = client.post(f"/api/tasks/{task['id']}/cancel", headers=auth())
    assert response.status_code == 200
    assert response.get_json()["status"] == "canceled"
    assert balance(client, auth) == 10
    again = client.post(f"/api/tasks/{task['id']}/cancel", headers=auth())
    assert again.status_code == 409
    assert balance(client, auth) == 10
    reasons = [
        r.reason
        for r in db_session.execute(
            select(CreditLedger).where(CreditLedger.task_id == uuid.UUID(task["id"]))
        ).scalars()
    ]
    assert sorted(reasons) == ["task_charge", "task_refund"]


def test_cancel_processing_asks_the_worker_and_is_202(client, auth, sent, db_session):
    task = client.post("/api/tasks", json=ECHO, headers=auth()).get_json()
    assert lifecycle.claim_task(db_session, uuid.UUID(task["id"]), 60) is not None
    response = client.post(f"/api/tasks/{task['id']}/cancel", headers=auth())
    assert response.status_code == 202
    assert response.get_json()["status"] == "processing"
    assert response.get_json()["cancel_requested"] is True
    assert balance(client, auth) == 9  # refunded when the worker stops
    assert lifecycle.record_progress(db_session, uuid.UUID(task["id"]), 0.5, 60) is False
    assert lifecycle.complete_task(db_session, uuid.UUID(task["id"]), {"x": 1}) == "canceled"
    assert balance(client, auth) == 10


def test_list_is_newest_first_paginated_and_filtered(client, auth, sent, db_session):
    client.post("/api/users/initialize", headers=auth("lister"))
    user_id = find_user_id(db_session, "lister")
    credits.grant(db_session, user_id, 100, "admin_grant")
    ids = []
    for i in range(5):
        ids.append(
            client.post(
                "/api/tasks",
                json={"type": "echo", "input": {"message": str(i)}},
                headers=auth("lister"),
            ).get_json()["id"]
        )
        if i < 4:
            client.post(f"/api/tasks/{ids[-1]}/cancel", headers=auth("lister"))
    page = client.get("/api/tasks?limit=2", headers=auth("lister")).get_json()
    assert [t["id"] for t in page["items"]] == ids[::-1][:2]
    seen = [t["id"] for t in page["items"]]
    while page["next_cursor"]:
        page = client.get(
            f"/api/tasks?limit=2&cursor={page['next_cursor']}", headers=auth("lister")
        ).get_json()
        seen += [t["id"] for t in page["items"]]
    assert seen == ids[::-1]
    queued = client.get("/api/tasks?status=queued", headers=auth("lister")).get_json()["items"]
    assert [t["id"] for t in queued] == [ids[-1]]
    assert (
        client.get("/api/tasks?type=image_analysis", headers=auth("lister")).get_json()["items"]
        == []
    )
    assert client.get("/api/tasks", headers=auth("someone_else")).get_json()["items"] == []


@pytest.mark.parametrize("query", ["status=bogus", "limit=0", "limit=500", "cursor=%%%"])
def test_list_bad_query_is_422(client, auth, query):
    response = client.get(f"/api/tasks?{query}", headers=auth())
    assert response.status_code == 422


def test_task_types_catalogue(client):
    body = client.get("/api/task-types").get_json()
    costs = {t["type"]: t["cost"] for t in body["items"]}
    assert costs == {"image_analysis": 1, "advanced_editing": 3, "video_generation": 5}
    video = next(t for t in body["items"] if t["type"] == "video_generation")
    assert "prompt" in video["input_schema"]["properties"]


def test_inline_images_are_not_echoed_back(client, auth, sent):
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, "PNG")
    encoded = base64.b64encode(png.getvalue()).decode()
    body = {"type": "image_analysis", "input": {"image_base64": encoded}}
    task = client.post("/api/tasks", json=body, headers=auth()).get_json()
    assert task["input"]["image_base64"] == f"<{len(encoded)} base64 characters>"


def test_prefer_wait_returns_202_when_the_task_does_not_end(client, auth, sent):
    response = client.post("/api/tasks", json=ECHO, headers=auth(Prefer="wait=0.2"))
    assert response.status_code == 202
    assert response.get_json()["status"] == "queued"
    bad = client.post("/api/tasks", json=ECHO, headers=auth(Prefer="wait=soon"))
    assert bad.status_code == 422


def test_broker_refusal_leaves_the_task_for_the_sweeper(client, auth, app, db_session):
    ext = app.extensions["studiox"]
    original = ext.send

    def refuse(message):
        raise ConnectionError("broker down")

    ext.send = refuse
    try:
        task = client.post("/api/tasks", json=ECHO, headers=auth()).get_json()
    finally:
        ext.send = original
    assert task["status"] == "queued"
    row = lifecycle.get_task(db_session, find_user_id(db_session, "user_test"), task["id"])
    assert row.enqueued_at is None  # the sweeper will send it on its next run


def test_task_type_input_schemas_are_self_contained(client):
    import json

    for item in client.get("/api/task-types").get_json()["items"]:
        schema = item["input_schema"]
        text = json.dumps(schema)
        assert "#/components/" not in text
        for name in [part.split('"')[0] for part in text.split('"#/definitions/')[1:]]:
            assert name in schema["definitions"], (item["type"], name)

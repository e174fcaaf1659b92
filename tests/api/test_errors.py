"""Every error has the API.md shape and a request id; nothing leaks a stack trace."""

import pytest


def assert_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert response.headers["X-Request-ID"]
    return body["error"]


def test_unknown_path_is_404_in_shape(client):
    assert_error(client.get("/nope"), 404, "not_found")


def test_wrong_method_is_405_in_shape(client):
    response = client.delete("/health")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_malformed_json_is_400(client, auth):
    response = client.post(
        "/api/tasks", data="{not json", headers=auth(), content_type="application/json"
    )
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize("depth", [33, 5_000, 200_000])
def test_deeply_nested_json_is_400_not_a_recursion_error(client, auth, depth):
    """32 levels are allowed; deeper is refused whether Python's parser copes (33) or
    hits its recursion limit (thousands)."""
    body = '{"type": "image_analysis", "input": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    response = client.post("/api/tasks", data=body, headers=auth(), content_type="application/json")
    assert "32 levels" in assert_error(response, 400, "bad_request")["message"]


def test_json_nested_32_levels_reaches_validation(client, auth):
    nested = "[" * 31 + "]" * 31  # the body object + 31 lists = 32 levels
    response = client.post(
        "/api/tasks",
        data='{"type": "image_analysis", "input": ' + nested + "}",
        headers=auth(),
        content_type="application/json",
    )
    assert_error(response, 422, "validation_error")


def test_wrong_content_type_is_415(client, auth):
    response = client.post("/api/tasks", data="type=x", headers=auth(), content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


def test_json_array_body_is_422(client, auth):
    response = client.post("/api/tasks", json=[1, 2], headers=auth())
    assert_error(response, 422, "validation_error")


def test_oversized_body_is_413(app, client, auth):
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = client.post(
        "/api/tasks", data=b"x" * (limit + 1), headers=auth(), content_type="application/json"
    )
    assert_error(response, 413, "payload_too_large")


def test_unexpected_exception_is_500_without_internals(settings, caplog):
    from api import create_app

    app = create_app(settings)

    @app.get("/__boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/__boom", headers={"X-Request-ID": "req-500"})
    error = assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.get_data(as_text=True)
    assert error["details"]["request_id"] == "req-500"
    assert any(
        "req-500" in r.getMessage() or getattr(r, "request_id", None) == "req-500"
        for r in caplog.records
    )


@pytest.mark.parametrize("path", ["/api/users/me", "/api/users/credits", "/api/tasks"])
def test_protected_endpoints_need_a_token(client, path):
    assert_error(client.get(path), 401, "unauthorized")


def test_a_deadlocked_transaction_is_retried_not_answered_503(settings, joined_app, auth):
    """PostgreSQL aborts one of two deadlocked transactions; the view runs again."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    from api.auth import Caller, authenticated

    app = joined_app(settings)
    calls = []

    @app.get("/__flaky")
    @authenticated
    def flaky(caller: Caller):
        calls.append(caller.user_id)
        if len(calls) == 1:
            raise OperationalError("UPDATE users ...", {}, psycopg.errors.DeadlockDetected())
        return {"attempts": len(calls)}

    response = app.test_client().get("/__flaky", headers=auth("deadlocked"))
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"attempts": 2}

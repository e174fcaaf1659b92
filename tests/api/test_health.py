def test_health_is_ok_without_auth(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["X-Request-ID"]


def test_request_id_is_echoed(client):
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


def test_unsafe_request_id_is_replaced(client):
    response = client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert response.headers["X-Request-ID"] != "bad id with spaces"
    assert len(response.headers["X-Request-ID"]) == 32


def test_ready_reports_database_and_broker(client):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json()["database"] == "ok"
    assert response.get_json()["broker"] == "ok"


def test_ready_names_the_unreachable_broker(app, settings):
    from api import create_app

    broken = create_app(settings.with_(broker_url="redis://127.0.0.1:1/0"))
    response = broken.test_client().get("/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"]["code"] == "service_unavailable"
    assert body["error"]["details"]["unavailable"] == ["broker"]


def test_ready_names_the_unreachable_database(settings):
    from api import create_app

    broken = create_app(settings.with_(database_url="postgresql+psycopg://postgres@127.0.0.1:1/x"))
    response = broken.test_client().get("/ready")
    assert response.status_code == 503
    assert response.get_json()["error"]["details"]["unavailable"] == ["database"]


def test_security_headers(client):
    response = client.get("/health")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_cors_allows_the_frontend_origin_only(client, settings):
    ok = client.get("/health", headers={"Origin": settings.frontend_url})
    assert ok.headers.get("Access-Control-Allow-Origin") == settings.frontend_url
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers

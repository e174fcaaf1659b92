def test_plans_are_public_and_seeded(client):
    response = client.get("/api/billing/plans")
    assert response.status_code == 200
    body = response.get_json()
    assert [p["id"] for p in body["plans"]] == ["free", "pro", "enterprise"]
    free = body["plans"][0]
    assert free["monthly_credits"] == 10 and free["price_cents"] == 0
    assert set(free) == {
        "id",
        "name",
        "monthly_credits",
        "price_cents",
        "currency",
        "features",
        "max_concurrent_tasks",
    }
    assert body["credit_packs"] and set(body["credit_packs"][0]) == {
        "id",
        "credits",
        "price_cents",
        "currency",
    }


def test_openapi_lists_every_documented_route(client, app):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for path in (
        "/health",
        "/ready",
        "/api/users/me",
        "/api/users/credits",
        "/api/users/initialize",
        "/api/tasks/create",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/billing/plans",
        "/api/task-types",
        "/api/users/transactions",
    ):
        assert path in spec["paths"], path
    served = {rule.rule for rule in app.url_map.iter_rules()}
    for path in spec["paths"]:
        flask_path = path.replace("{", "<").replace("}", ">")
        assert flask_path in served, path
    assert spec["paths"]["/api/users/me"]["get"]["security"] == [{"bearer": []}]
    assert "401" in spec["paths"]["/api/users/me"]["get"]["responses"]


def test_docs_page_is_served(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert b"/openapi.json" in response.data

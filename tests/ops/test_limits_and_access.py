"""Rate limits (counted in the real Redis) and who may read /metrics, each on an app
instance of its own with small limits."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis

from api import create_app
from api.ratelimit import storage_uri
from tests.support.redis_server import RedisServer
from tests.support.waiting import free_port


@pytest.fixture()
def make_app(settings, committed):
    """`make_app(**settings changes)`: a separate app on the test database and Redis.

    Not TESTING: the shared test app switches rate limits off, this one must not.
    """
    apps = []

    def make(**changes):
        app = create_app(settings.with_(**changes))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["studiox"].db.dispose()


def _ip() -> str:
    # A fresh documentation-range address per test, so runs never share an IP budget.
    n = uuid.uuid4().int
    return f"198.51.{n % 250}.{(n >> 8) % 250 + 1}"


def test_the_caller_over_the_limit_gets_429_with_retry_after(make_app, token):
    app = make_app(rate_limit="3 per minute", rate_limit_ip="1000 per minute")
    # Counted in Redis (the broker's), as in production, not in this process's memory.
    assert storage_uri(app.extensions["studiox"].settings).startswith("redis://")
    client = app.test_client()
    ip = {"REMOTE_ADDR": _ip()}
    user = {"Authorization": f"Bearer {token(f'rl_{uuid.uuid4().hex[:8]}')}"}

    statuses = [
        client.get("/api/users/credits", headers=user, environ_base=ip).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    # The limit is per caller across routes: the 4th request, on another route, is refused.
    refused = client.get("/api/tasks", headers=user, environ_base=ip)
    assert refused.status_code == 429
    body = refused.get_json()
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["message"]
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 61
    assert body["error"]["details"]["retry_after"] == retry_after
    assert refused.headers["X-Request-ID"]

    # Someone else, from the same address, still has their own budget.
    other = {"Authorization": f"Bearer {token(f'rl_{uuid.uuid4().hex[:8]}')}"}
    assert client.get("/api/users/credits", headers=other, environ_base=ip).status_code == 200
    # Probes and scrapes are never limited.
    for _ in range(5):
        assert client.get("/health", headers=user, environ_base=ip).status_code == 200
        assert client.get("/metrics", headers=user, environ_base=ip).status_code == 200


def test_a_forged_token_does_not_spend_the_named_users_budget(make_app, token, settings):
    import jwt

    app = make_app(rate_limit="2 per minute", rate_limit_ip="1000 per minute")
    client = app.test_client()
    sub = f"rl_{uuid.uuid4().hex[:8]}"
    forged = jwt.encode(
        {"sub": sub, "exp": 4_000_000_000},
        "not-the-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )
    for _ in range(5):
        response = client.get("/api/users/credits", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401
    real = {"Authorization": f"Bearer {token(sub)}"}
    assert client.get("/api/users/credits", headers=real).status_code == 200


def test_the_ip_over_the_limit_gets_429_signed_in_or_not(make_app):
    app = make_app(rate_limit="1000 per minute", rate_limit_ip="2 per minute")
    client = app.test_client()
    ip = {"REMOTE_ADDR": _ip()}
    assert [client.get("/api/billing/plans", environ_base=ip).status_code for _ in range(2)] == [
        200,
        200,
    ]
    refused = client.get("/api/billing/plans", environ_base=ip)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert client.get("/api/billing/plans", environ_base={"REMOTE_ADDR": _ip()}).status_code == 200
    assert client.get("/ready", environ_base=ip).status_code == 200


def test_with_redis_unreachable_limits_count_in_memory_with_one_warning(make_app, token, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = make_app(
        rate_limit="3 per minute", rate_limit_ip="1000 per minute", rate_limit_storage_url=dead
    )
    client = app.test_client()
    user = {"Authorization": f"Bearer {token(f'rl_{uuid.uuid4().hex[:8]}')}"}
    ip = {"REMOTE_ADDR": _ip()}
    with caplog.at_level(logging.INFO):
        statuses = [
            client.get("/api/users/credits", headers=user, environ_base=ip).status_code
            for _ in range(5)
        ]
    # Served, and still limited: the fallback counts in this process's memory.
    assert statuses == [200, 200, 200, 429, 429]
    limiter_records = [
        r for r in caplog.records if r.name == "studiox.ratelimit" and r.levelno >= logging.WARNING
    ]
    assert len(limiter_records) == 1, [r.getMessage() for r in limiter_records]
    assert "counting in this process's memory" in limiter_records[0].getMessage()
    assert all(r.exc_info is None for r in limiter_records)


def test_metrics_are_locked_down_in_production(make_app):
    app = make_app(environment="production", auth_mode="clerk")
    client = app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    outside = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert outside.status_code == 403
    assert outside.get_json()["error"]["code"] == "forbidden"

    app = make_app(
        environment="production",
        auth_mode="clerk",
        metrics_token="scrape-secret",
        metrics_allow=("10.0.0.0/8",),
    )
    client = app.test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 401
    scraped = client.get(
        "/metrics",
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
        headers={"Authorization": "Bearer scrape-secret"},
    )
    assert scraped.status_code == 200
    assert "studiox_queue_depth" in scraped.get_data(as_text=True)
    wrong = client.get(
        "/metrics",
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
        headers={"Authorization": "Bearer guess"},
    )
    assert wrong.status_code == 401


def test_production_refuses_dev_authentication(settings):
    with pytest.raises(ValueError, match="AUTH_MODE=dev"):
        create_app(settings.with_(environment="production", auth_mode="dev"))


def test_metrics_are_in_the_openapi_document(client):
    spec = client.get("/openapi.json").get_json()
    assert "get" in spec["paths"]["/metrics"]
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_every_counter_of_a_request_is_counted_in_one_redis_round_trip(make_app, token):
    app = make_app(rate_limit="10/second; 1000/hour", rate_limit_ip="1000 per minute")
    limiter = app.extensions["studiox"].extras["limiter"]
    calls = []
    real_hit = limiter.redis.hit
    limiter.redis.hit = lambda keys, expiries: calls.append(keys) or real_hit(keys, expiries)
    client = app.test_client()
    user = {"Authorization": f"Bearer {token(f'rl_{uuid.uuid4().hex[:8]}')}"}
    for _ in range(3):
        response = client.get(
            "/api/users/credits", headers=user, environ_base={"REMOTE_ADDR": _ip()}
        )
        assert response.status_code == 200
    # One script call per request, holding the IP budget and both of the caller's limits.
    assert [len(keys) for keys in calls] == [3, 3, 3]


def test_counting_goes_back_to_redis_when_it_returns(make_app, token, tmp_path, caplog):
    server = RedisServer(tmp_path).start()
    try:
        app = make_app(
            rate_limit="1000 per minute",
            rate_limit_ip="1000 per minute",
            rate_limit_storage_url=server.url,
        )
        client = app.test_client()
        user = {"Authorization": f"Bearer {token(f'rl_{uuid.uuid4().hex[:8]}')}"}
        ip = {"REMOTE_ADDR": _ip()}
        server.stop()
        with caplog.at_level(logging.INFO, logger="studiox.ratelimit"):
            assert (
                client.get("/api/users/credits", headers=user, environ_base=ip).status_code == 200
            )
            server.start()
            time.sleep(1.2)  # the first retry of Redis comes after 1 s
            assert (
                client.get("/api/users/credits", headers=user, environ_base=ip).status_code == 200
            )
        assert redis.Redis.from_url(server.url).keys("studiox:rl:*"), "not counted in Redis"
        assert any("back" in r.getMessage() for r in caplog.records)
    finally:
        server.stop()

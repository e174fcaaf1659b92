"""API error answers arrive as typed exceptions carrying the facts a caller acts on."""

from __future__ import annotations

import uuid

import pytest

from studiox_client import (
    APIError,
    BillingNotConfigured,
    Client,
    ConfigurationError,
    Conflict,
    InsufficientCredits,
    NotFound,
    RateLimited,
    StudioXError,
    Unauthorized,
    ValidationError,
)

LONG = {"steps": 100, "step_seconds": 0.1}


def test_insufficient_credits_carries_required_and_available(sx):
    sx.tasks.create("echo_pricey", {})  # 7 of the 10 signup credits
    with pytest.raises(InsufficientCredits) as exc:
        sx.tasks.create("echo_pricey", {})
    assert (exc.value.required, exc.value.available) == (7, 3)
    assert exc.value.status == 402 and exc.value.code == "insufficient_credits"


def test_not_found(sx):
    with pytest.raises(NotFound) as exc:
        sx.tasks.get(str(uuid.uuid4()))
    assert exc.value.status == 404
    with pytest.raises(NotFound):
        sx.artifacts.download(str(uuid.uuid4()), "output.png")


def test_validation_error_names_the_fields(sx):
    with pytest.raises(ValidationError) as exc:
        sx.tasks.create("echo", {"steps": 0})
    assert exc.value.status == 422
    assert "steps" in exc.value.details["input"]
    with pytest.raises(ValidationError) as unknown:
        sx.tasks.create("no_such_type", {})
    assert "type" in unknown.value.details


def test_idempotency_key_reused_with_another_body_is_a_conflict(sx):
    sx.tasks.create("echo", {"message": "a"}, idempotency_key="same-key")
    with pytest.raises(Conflict) as exc:
        sx.tasks.create("echo", {"message": "b"}, idempotency_key="same-key", wait=None)
    assert exc.value.status == 409
    assert sx.credits().total == 9


def test_concurrency_limit_is_rate_limited_with_retry_after(sx):
    running = [sx.tasks.create("echo", LONG) for _ in range(2)]  # the free plan's limit
    try:
        with pytest.raises(RateLimited) as exc:
            sx.tasks.create("echo", {})  # no idempotency key: raised, not retried
        assert exc.value.retry_after == 5
        assert exc.value.details["limit"] == 2
    finally:
        for task in running:
            sx.tasks.cancel(task)


def test_bad_key_is_unauthorized(base_url, committed):
    with Client(base_url, "not-a-valid-token") as client, pytest.raises(Unauthorized):
        client.credits()


def test_billing_without_stripe_is_billing_not_configured(sx):
    with pytest.raises(BillingNotConfigured) as exc:
        sx.request("POST", "/api/billing/purchase-credits", json={"credits": 100})
    assert exc.value.status == 503


def test_every_api_error_is_a_studiox_error(sx):
    with pytest.raises(StudioXError) as exc:
        sx.tasks.get("nope")
    assert isinstance(exc.value, APIError) and exc.value.request_id


def test_a_client_without_a_key_says_how_to_get_one(base_url):
    with pytest.raises(ConfigurationError, match="STUDIOX_API_KEY"):
        Client(base_url)

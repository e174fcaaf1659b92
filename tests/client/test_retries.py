"""Retries with backoff, for real: a transport in front of the real one turns the first
answers into 503/429 (or drops the connection), and the client must get through to the
real server afterwards, or give up when a retry would be unsafe."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from studiox_client import (
    APIConnectionError,
    Client,
    RateLimited,
    ServiceUnavailable,
)


class Flaky(httpx.BaseTransport):
    """Answers the first `failures` requests itself (an error status, or a dropped
    connection), then forwards to the real server over a real socket."""

    def __init__(
        self, failures: int, status: int = 503, retry_after: str | None = "0", drop: bool = False
    ):
        self.failures = failures
        self.status = status
        self.retry_after = retry_after
        self.drop = drop
        self.requests: list[httpx.Request] = []
        self.real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures > 0:
            self.failures -= 1
            if self.drop:
                raise httpx.ConnectError("connection refused", request=request)
            code = "rate_limited" if self.status == 429 else "service_unavailable"
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return httpx.Response(
                self.status,
                headers=headers,
                json={"error": {"code": code, "message": "Try again shortly."}},
            )
        return self.real.handle_request(request)

    def close(self) -> None:
        self.real.close()


def client_for(base_url: str, key: str, transport: httpx.BaseTransport, **options) -> Client:
    return Client(base_url, key, transport=transport, retry_backoff=0.01, **options)


def test_get_succeeds_after_two_503s(base_url, new_key):
    flaky = Flaky(failures=2)
    with client_for(base_url, new_key(), flaky) as client:
        assert client.credits().total == 10
    assert len(flaky.requests) == 3


def test_create_with_an_idempotency_key_is_retried_and_charged_once(base_url, new_key):
    flaky = Flaky(failures=2)
    with client_for(base_url, new_key(), flaky) as client:
        task = client.tasks.create("echo", {}, idempotency_key="retry-me")
        assert client.tasks.get(task.id).id == task.id
        assert client.credits().total == 9
    assert [r.method for r in flaky.requests[:3]] == ["POST"] * 3
    assert all(r.headers["Idempotency-Key"] == "retry-me" for r in flaky.requests[:3])


def test_create_without_an_idempotency_key_is_not_retried(base_url, new_key):
    flaky = Flaky(failures=2)
    with client_for(base_url, new_key(), flaky) as client:
        with pytest.raises(ServiceUnavailable):
            client.tasks.create("echo", {})
        assert len(flaky.requests) == 1
        assert list(client.tasks.list()) == []


def test_cancel_is_retried(base_url, new_key):
    flaky = Flaky(failures=0)
    with client_for(base_url, new_key(), flaky) as client:
        task = client.tasks.create("echo", {"steps": 100, "step_seconds": 0.1})
        flaky.failures = 2
        canceled = client.tasks.cancel(task)
        assert canceled.status == "canceled" or canceled.cancel_requested


def test_gives_up_after_max_retries(base_url, new_key):
    flaky = Flaky(failures=10)
    client = client_for(base_url, new_key(), flaky, max_retries=2)
    with client, pytest.raises(ServiceUnavailable) as exc:
        client.credits()
    assert exc.value.retry_after == 0
    assert len(flaky.requests) == 3


def test_retry_after_is_honoured(base_url, new_key):
    flaky = Flaky(failures=1, status=429, retry_after="1")
    with client_for(base_url, new_key(), flaky) as client:
        started = time.monotonic()
        client.credits()
        assert time.monotonic() - started >= 1.0
    assert len(flaky.requests) == 2


def test_a_retry_after_beyond_the_limit_is_raised_at_once(base_url, new_key):
    flaky = Flaky(failures=1, status=429, retry_after="3600")
    client = client_for(base_url, new_key(), flaky)
    with client, pytest.raises(RateLimited) as exc:
        client.credits()
    assert exc.value.retry_after == 3600
    assert len(flaky.requests) == 1


def test_connection_errors_are_retried_for_reads(base_url, new_key):
    flaky = Flaky(failures=2, drop=True)
    with client_for(base_url, new_key(), flaky) as client:
        assert client.credits().total == 10
    assert len(flaky.requests) == 3


def test_an_unreachable_server_is_a_connection_error(committed):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Counting(httpx.HTTPTransport):
        calls = 0

        def handle_request(self, request):
            Counting.calls += 1
            return super().handle_request(request)

    with Client(
        f"http://127.0.0.1:{port}",
        "sx_live_x",
        transport=Counting(),
        retry_backoff=0.01,
        max_retries=2,
    ) as client:
        with pytest.raises(APIConnectionError):
            client.credits()
        assert Counting.calls == 3
        with pytest.raises(APIConnectionError):
            client.tasks.create("echo", {})  # not safe to repeat: tried once
        assert Counting.calls == 4

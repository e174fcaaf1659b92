"""The API writes Celery messages to Redis itself (api/queue.py): they must be what
Celery + kombu would have written for the same call, field by field (real Redis). A
real worker consuming them is covered by every test in tests/e2e."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

import pytest
import redis

from api.queue import RedisPublisher, make_producer, sender
from shared.outbox import Message
from shared.queue_config import send_with_celery

QUEUE = "queue_form_test"


@pytest.fixture()
def broker(settings):
    client = redis.Redis.from_url(settings.broker_url)
    client.delete(QUEUE)
    yield client
    client.delete(QUEUE)


def _celery_and_ours(settings, broker, message: Message) -> tuple[dict, dict]:
    producer = make_producer(settings)
    producer.conf.task_default_queue = QUEUE
    send_with_celery(producer, message)
    RedisPublisher(settings, queue=QUEUE).send(message)
    ours, celerys = (json.loads(raw) for raw in broker.lrange(QUEUE, 0, -1))  # LPUSH: newest first
    return celerys, ours


@pytest.mark.parametrize(
    "message",
    [
        Message(
            name="studiox.run_task",
            args=["7d6f2c5e-0000-4000-8000-000000000001"],
            task_id="7d6f2c5e-0000-4000-8000-000000000001",
            headers={"request_id": "req-1"},
            soft_time_limit=20,
            time_limit=30,
        ),
        Message(name="studiox.deliver_webhook", args=[str(uuid.uuid4()), "succeeded"]),
        Message(name="studiox.deliver_webhook", args=["x", "failed"], countdown=30),
    ],
    ids=["run_task", "no id or limits", "countdown"],
)
def test_our_messages_are_the_ones_celery_writes(settings, broker, message):
    celerys, ours = _celery_and_ours(settings, broker, message)

    # Different per message by design: a fresh delivery tag each; no result queue.
    for envelope in (celerys, ours):
        envelope["properties"].pop("delivery_tag")
    assert celerys["properties"].pop("reply_to") and ours["properties"].pop("reply_to") is None
    if message.task_id is None:  # each side made up its own id
        for envelope in (celerys, ours):
            task_id = envelope["headers"]["id"]
            assert envelope["headers"].pop("root_id") == task_id
            assert envelope["properties"].pop("correlation_id") == task_id
            envelope["headers"].pop("id")
            body = json.loads(base64.b64decode(envelope.pop("body")))
            assert body[0] == message.args
            envelope["body"] = body
    if message.countdown:
        etas = [datetime.fromisoformat(e["headers"].pop("eta")) for e in (celerys, ours)]
        assert abs((etas[0] - etas[1]).total_seconds()) < 5

    assert ours == celerys


def test_the_api_uses_it_on_redis_and_celery_elsewhere(settings):
    on_redis = sender(settings, make_producer(settings))
    assert getattr(on_redis, "__self__", None).__class__ is RedisPublisher
    embedded = settings.with_(broker_url="filesystem:///tmp/studiox-test-broker")
    elsewhere = sender(embedded, make_producer(embedded))
    assert not isinstance(getattr(elsewhere, "__self__", None), RedisPublisher)


def test_a_refused_connection_raises_quickly(settings):
    from tests.support.waiting import free_port

    dead = settings.with_(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError):
        RedisPublisher(dead).send(Message(name="studiox.run_task", args=["x"], task_id="x"))

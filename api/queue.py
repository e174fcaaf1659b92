"""The API's Celery producer: sends tasks by name, never importing worker code.

On a Redis broker the API writes each message itself, with one LPUSH, in exactly the
form Celery + kombu would (Celery message protocol 2, kombu's Redis envelope). Going
through `send_task` costs about 1 ms of CPU per message here (kombu builds a new Redis
client for every publish), a sixth of a whole `POST /api/tasks`; the LPUSH costs 0.1 ms.
tests/api/test_queue.py compares the two forms field by field, and every end-to-end test
has a real `celery worker` consume what this writes. Other brokers (the embedded
filesystem one of `make run`) go through `send_task`.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
from celery import Celery
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from shared.config import Settings
from shared.outbox import Message
from shared.queue_config import (
    TASK_QUEUE,
    broker_transport_options,
    celery_config,
    send_with_celery,
)
from shared.tasks import registry

log = logging.getLogger("studiox.queue")

# What kombu puts around every message body on Redis (kombu/transport/virtual).
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def make_producer(settings: Settings) -> Celery:
    app = Celery("studiox-api", set_as_current=False)
    app.conf.update(celery_config(settings, visibility_timeout_s=_visibility_timeout_s()))
    return app


def _visibility_timeout_s() -> int:
    return 2 * registry.longest_time_limit_s()


def sender(settings: Settings, producer: Celery) -> Callable[[Message], None]:
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisPublisher(settings).send
    return functools.partial(send_with_celery, producer)


class RedisPublisher:
    """Celery task messages straight onto the Redis list a worker reads (thread-safe)."""

    def __init__(self, settings: Settings, queue: str = TASK_QUEUE):
        options = broker_transport_options(settings, _visibility_timeout_s())
        self.queue = queue
        self.client = redis.Redis.from_url(
            settings.broker_url,
            socket_connect_timeout=options["socket_connect_timeout"],
            socket_timeout=options["socket_timeout"],
            # As the Celery producer was set up: one retry, then the caller's fallback
            # (the task stays queued in the database and the sweeper sends it).
            retry=Retry(ConstantBackoff(0.2), 1),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"

    def send(self, message: Message) -> None:
        self.client.lpush(self.queue, json.dumps(self.envelope(message)))

    def envelope(self, message: Message) -> dict:
        task_id = message.task_id or str(uuid.uuid4())
        eta = None
        if message.countdown:
            eta = (datetime.now(UTC) + timedelta(seconds=message.countdown)).isoformat()
        body = json.dumps([message.args, {}, _EMBED]).encode()
        headers = {
            "lang": "py",
            "task": message.name,
            "id": task_id,
            "shadow": None,
            "eta": eta,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [message.time_limit, message.soft_time_limit],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr(message.args),
            "kwargsrepr": "{}",
            "origin": self.origin,
            "ignore_result": False,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
            **(message.headers or {}),
        }
        return {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": task_id,
                "reply_to": None,  # no results are read back
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": self.queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }

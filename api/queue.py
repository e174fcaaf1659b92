"""The API's Celery producer: sends tasks by name, never importing worker code."""

from __future__ import annotations

import logging

from celery import Celery

from shared.config import Settings
from shared.outbox import Message
from shared.queue_config import celery_config
from shared.tasks import registry

log = logging.getLogger("studiox.queue")


def make_producer(settings: Settings) -> Celery:
    app = Celery("studiox-api", set_as_current=False)
    app.conf.update(
        celery_config(settings, visibility_timeout_s=2 * registry.longest_time_limit_s())
    )
    return app


def sender(producer: Celery):
    def send(message: Message) -> None:
        producer.send_task(
            message.name,
            args=message.args,
            task_id=message.task_id,
            countdown=message.countdown,
            headers=message.headers or None,
            soft_time_limit=message.soft_time_limit,
            time_limit=message.time_limit,
        )

    return send

"""Celery settings shared by the API's producer and the workers (plain dicts, no Celery
import, so `shared/` stays framework-free)."""

from __future__ import annotations

from pathlib import Path

from shared.config import Settings
from shared.outbox import Message

TASK_QUEUE = "studiox"


def broker_transport_options(settings: Settings, visibility_timeout_s: int) -> dict:
    url = settings.broker_url
    if url.startswith("filesystem://"):
        # kombu's filesystem transport: the embedded broker for `make run`.
        folder = Path(url[len("filesystem://") :] or "var/broker").resolve()
        for sub in ("queue", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "control_folder": str(folder / "control"),
            "polling_interval": 0.2,
        }
    return {
        # Above the longest task time limit, or Redis would hand a still-running task
        # to a second worker.
        "visibility_timeout": visibility_timeout_s,
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
        "retry_on_timeout": True,
    }


def celery_config(settings: Settings, visibility_timeout_s: int) -> dict:
    broker_url = settings.broker_url
    if broker_url.startswith("filesystem://"):
        broker_url = "filesystem://"
    return {
        "broker_url": broker_url,
        "result_backend": settings.result_backend,
        "broker_transport_options": broker_transport_options(settings, visibility_timeout_s),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": TASK_QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "enable_utc": True,
        "timezone": "UTC",
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "broker_pool_limit": 10,
        # A producer must not hang a request when the broker is down: fail fast, the
        # sweeper re-sends what was accepted.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
    }


def send_with_celery(celery_app, message: Message) -> None:
    """Send an outbox message through a Celery app (the workers' own, and the API's where
    the broker is not Redis: see api/queue.py)."""
    celery_app.send_task(
        message.name,
        args=message.args,
        task_id=message.task_id,
        countdown=message.countdown,
        headers=message.headers or None,
        soft_time_limit=message.soft_time_limit,
        time_limit=message.time_limit,
    )

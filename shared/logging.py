"""Logging set up once per process: JSON lines in production, readable text in dev.

The current request id (API) or task's request id (worker) is added to every record
through a context variable, so one id follows a request into the worker's lines.
Celery's own lines about a task ("... succeeded in 0.2s") are logged after the task
function has returned; they name the task in `record.data["id"]`, and get the request
id this process last saw with that task id.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
from collections import OrderedDict
from datetime import UTC, datetime

from shared.config import Settings

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    REMEMBER = 1024  # how many recent task ids keep their request id (oldest dropped)

    def __init__(self) -> None:
        super().__init__()
        self._request_of_task: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "task_id", None) is None:
            record.task_id = task_id_var.get()
        if record.task_id is None:
            data = getattr(record, "data", None)  # Celery's trace lines: {"id": task id, ...}
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                record.task_id = data["id"]
        if record.task_id is not None:
            with self._lock:
                if record.request_id is not None:
                    self._request_of_task[record.task_id] = record.request_id
                    self._request_of_task.move_to_end(record.task_id)
                    while len(self._request_of_task) > self.REMEMBER:
                        self._request_of_task.popitem(last=False)
                else:
                    record.request_id = self._request_of_task.get(record.task_id)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ids = [
            f"{k}={getattr(record, k)}"
            for k in ("request_id", "task_id")
            if getattr(record, k, None)
        ]
        return f"{base} [{' '.join(ids)}]" if ids else base


def configure_logging(settings: Settings, process: str) -> None:
    root = logging.getLogger()
    if getattr(root, "_studiox_configured", None) == (settings.log_format, settings.log_level):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter(f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s")
        )
    for old in list(root.handlers):
        if getattr(old, "_studiox", False):
            root.removeHandler(old)
    handler._studiox = True
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    root._studiox_configured = (settings.log_format, settings.log_level)

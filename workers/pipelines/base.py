"""What handlers see: the task's input, progress/cancel, artifacts, typed errors."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import Settings
from shared.storage import Storage


class PipelineError(Exception):
    code = "pipeline_error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class PermanentError(PipelineError):
    """The input cannot be processed (bad image, refused URL, ...): fail and refund."""

    code = "invalid_input"


class TransientError(PipelineError):
    """Worth another try later (a provider's 429/5xx, a timeout)."""

    code = "upstream_unavailable"


class TaskCanceled(Exception):
    """The user canceled; raised at the next step boundary."""


@dataclass
class TaskContext:
    task_id: uuid.UUID
    user_id: uuid.UUID
    type: str
    input: dict
    attempt: int
    settings: Settings
    storage: Storage
    report_progress: Callable[[float], bool]
    canceled: threading.Event = field(default_factory=threading.Event)
    artifacts: list[dict] = field(default_factory=list)

    def progress(self, fraction: float) -> None:
        """Record progress (0..1); raises TaskCanceled if the user canceled."""
        if self.canceled.is_set() or not self.report_progress(fraction):
            self.canceled.set()
            raise TaskCanceled()

    def check_canceled(self) -> None:
        if self.canceled.is_set():
            raise TaskCanceled()

    def save_artifact(self, name: str, data: bytes, content_type: str) -> dict:
        stored = self.storage.put(str(self.task_id), name, data, content_type).as_dict()
        return self._record(stored)

    def save_artifact_file(self, name: str, path: Path, content_type: str) -> dict:
        """Like `save_artifact` for a file on disk (a video): never read whole into memory."""
        stored = self.storage.put_file(str(self.task_id), name, path, content_type).as_dict()
        return self._record(stored)

    def _record(self, stored: dict) -> dict:
        self.artifacts = [a for a in self.artifacts if a["name"] != stored["name"]] + [stored]
        return stored

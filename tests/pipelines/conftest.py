"""Helpers for pipeline unit tests: handlers run in-process on a TaskContext we build."""

from __future__ import annotations

import base64
import io
import uuid

import pytest
from PIL import Image

from shared.config import Settings
from shared.storage import LocalStorage
from shared.tasks import registry
from workers.pipelines import get_handler
from workers.pipelines.base import TaskContext


def image_bytes(size=(64, 48), color=(255, 0, 0), fmt="PNG", mode="RGB", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Run:
    """One handler run: its context, the progress values it reported, and its storage."""

    def __init__(
        self,
        tmp_path,
        settings: Settings,
        type_name: str,
        input: dict,
        cancel_after: int | None = None,
        validate: bool = True,
    ):
        self.progress: list[float] = []
        self.cancel_after = cancel_after
        self.storage = LocalStorage(tmp_path / "artifacts")
        data = registry.get(type_name).validate(input) if validate else input
        self.ctx = TaskContext(
            task_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            type=type_name,
            input=data,
            attempt=1,
            settings=settings,
            storage=self.storage,
            report_progress=self._report,
        )

    def _report(self, fraction: float) -> bool:
        self.progress.append(fraction)
        # False = "the user canceled", as record_progress says for a canceled task.
        return self.cancel_after is None or len(self.progress) <= self.cancel_after

    def __call__(self) -> dict:
        return get_handler(self.ctx.type)(self.ctx)

    def artifact(self, name: str) -> bytes:
        with self.storage.open(str(self.ctx.task_id), name) as fh:
            return fh.read()


@pytest.fixture()
def pipeline_settings(tmp_path) -> Settings:
    return Settings(
        storage_url=f"file://{tmp_path / 'artifacts'}",
        image_fetch_timeout_s=3.0,
        ai_http_timeout_s=2.0,
        ai_http_max_retries=2,
        ai_http_backoff_s=0.01,
    )


@pytest.fixture()
def run_handler(tmp_path, pipeline_settings):
    def make(type_name: str, input: dict, settings: Settings | None = None, **kwargs) -> Run:
        return Run(tmp_path, settings or pipeline_settings, type_name, input, **kwargs)

    return make


@pytest.fixture()
def fake_server():
    from tests.pipelines.fake_server import FakeServer

    with FakeServer() as server:
        yield server

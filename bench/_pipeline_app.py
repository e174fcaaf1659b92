"""A bare Celery app whose one task runs the image_analysis pipeline on the input it is
sent, with none of StudioX's bookkeeping (no claim, lease, progress or finishing
statement): the worker benchmark's second baseline, so its table separates what the
pipeline costs from what the task lifecycle costs. `celery -A bench._pipeline_app worker`.
"""

from __future__ import annotations

import uuid

from celery import Celery

from shared.config import Settings
from shared.queue_config import celery_config
from workers.pipelines import get_handler
from workers.pipelines.base import TaskContext

settings = Settings.from_env()
app = Celery("bench-pipeline")
app.conf.update(celery_config(settings, 3600))
handler = get_handler("image_analysis")


@app.task(name="bench.analyze_only", ignore_result=True, acks_late=True)
def analyze_only(clean_input: dict) -> None:
    handler(
        TaskContext(
            task_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            type="image_analysis",
            input=clean_input,
            attempt=1,
            settings=settings,
            storage=None,
            report_progress=lambda _fraction: True,
        )
    )

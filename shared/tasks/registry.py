"""The task-type registry: type -> input schema, cost, time limits, retry budget.

The API validates and prices requests from it; the workers look up the handler of the
same name (`workers.pipelines`). Costs live here and nowhere else.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from marshmallow import Schema, ValidationError

from shared.errors import ValidationFailed
from shared.tasks import schemas
from shared.validation import schema_instance


@dataclass(frozen=True)
class TaskType:
    name: str
    cost: int
    description: str
    input_schema: type[Schema]
    soft_time_limit_s: int = 60
    time_limit_s: int = 90
    max_attempts: int = 3
    listed: bool = True

    def validate(self, payload) -> dict:
        """The input as the handler will see it; ValidationFailed names bad fields."""
        if not isinstance(payload, dict):
            raise ValidationFailed(
                "input must be an object.", {"input": ["Must be a JSON object."]}
            )
        try:
            return schema_instance(self.input_schema).load(payload)
        except ValidationError as err:
            raise ValidationFailed(
                f"The input for {self.name} is not valid.", {"input": err.messages}
            ) from None


_REGISTRY: dict[str, TaskType] = {}


def register(task_type: TaskType) -> TaskType:
    _REGISTRY[task_type.name] = task_type
    return task_type


def get(name: str) -> TaskType:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(t.name for t in listed()))
        raise ValidationFailed(
            f"Unknown task type {name!r}.", {"type": [f"Must be one of: {known}."]}
        ) from None


def listed() -> list[TaskType]:
    return [t for t in _REGISTRY.values() if t.listed]


def longest_time_limit_s() -> int:
    return max(t.time_limit_s for t in _REGISTRY.values())


def load_plugins(modules: tuple[str, ...]) -> None:
    """Import modules that register extra task types (and, in workers, handlers)."""
    for module in modules:
        importlib.import_module(module)


register(
    TaskType(
        name="image_analysis",
        cost=1,
        description="Dimensions, format, dominant colours, brightness, contrast, "
        "sharpness, EXIF and a perceptual hash of an image.",
        input_schema=schemas.ImageAnalysisInput,
        soft_time_limit_s=60,
        time_limit_s=90,
    )
)
register(
    TaskType(
        name="advanced_editing",
        cost=3,
        description="An ordered list of edits (resize, crop, rotate, flip, grayscale, "
        "blur, sharpen, brightness, contrast, text) producing an image artifact.",
        input_schema=schemas.AdvancedEditingInput,
        soft_time_limit_s=120,
        time_limit_s=180,
    )
)
register(
    TaskType(
        name="video_generation",
        cost=5,
        description="An H.264 MP4 of title cards and image slides with transitions, "
        "made from a prompt and optional images, plus a poster frame.",
        input_schema=schemas.VideoGenerationInput,
        soft_time_limit_s=540,
        time_limit_s=600,
    )
)

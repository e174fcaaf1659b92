"""Placeholder until the real pipeline lands: fails permanently (and refunds)."""

from workers.pipelines import handler
from workers.pipelines.base import PermanentError


@handler("image_analysis")
def run(ctx):
    raise PermanentError("This task type is not available yet.", code="not_implemented")

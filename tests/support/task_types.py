"""A task type for tests only (loaded through TASK_TYPE_PLUGINS): `echo` sleeps through
its steps, reports progress, and fails on request, so lifecycle tests control timing."""

from __future__ import annotations

import os
import time

from marshmallow import Schema, fields, validate

from shared.tasks.registry import TaskType, register


class EchoInput(Schema):
    steps = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1000))
    step_seconds = fields.Float(load_default=0, validate=validate.Range(min=0, max=60))
    fail = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(["permanent", "transient", "crash", "transient_once"]),
    )
    message = fields.String(load_default="")


# (name, cost, soft time limit, hard time limit): same handler, different terms.
for name, cost, soft_s, hard_s in (
    ("echo", 1, 20, 30),
    ("echo_short_limit", 1, 1, 5),
    ("echo_pricey", 7, 20, 30),
):
    register(
        TaskType(
            name=name,
            cost=cost,
            description="test only",
            input_schema=EchoInput,
            soft_time_limit_s=soft_s,
            time_limit_s=hard_s,
            max_attempts=3,
            listed=False,
        )
    )


def _register_handlers():
    try:
        from workers.pipelines import handler
        from workers.pipelines.base import PermanentError, TransientError
    except ImportError:  # the API process has no worker code loaded
        return

    @handler("echo")
    @handler("echo_pricey")
    @handler("echo_short_limit")
    def echo(ctx):
        data = ctx.input
        for step in range(data["steps"]):
            if data["step_seconds"]:
                time.sleep(data["step_seconds"])
            ctx.progress((step + 1) / data["steps"])
        if data["fail"] == "permanent":
            raise PermanentError("asked to fail", code="echo_failed")
        if data["fail"] == "transient" or (data["fail"] == "transient_once" and ctx.attempt == 1):
            raise TransientError("asked to fail for now")
        if data["fail"] == "crash":
            raise RuntimeError("boom")
        return {"echo": data["message"], "attempt": ctx.attempt, "pid": os.getpid()}


_register_handlers()

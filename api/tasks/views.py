"""Tasks: create, read, list, cancel, and the catalogue of task types."""

from __future__ import annotations

import functools
import json
import time

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, g, request

from api.auth import Caller, authenticated
from api.db import db_session
from api.errors import ApiError
from api.openapi import document
from api.schemas import load_json, load_query
from api.tasks import schemas
from shared.tasks import registry
from shared.tasks import service as tasks
from shared.tasks.models import TERMINAL_STATUSES
from shared.tasks.representation import task_json

blueprint = Blueprint("tasks", __name__)

MAX_WAIT_S = 60.0
IDEMPOTENCY_KEY_MAX = 255


def _prefer_wait() -> float:
    """Seconds from `Prefer: wait=N` (capped at 60), or 0."""
    for part in request.headers.get("Prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return max(0.0, min(float(value.strip()), MAX_WAIT_S))
            except ValueError:
                raise ApiError(
                    422,
                    "validation_error",
                    "Prefer: wait=<seconds> takes a number.",
                    {"Prefer": ["wait must be a number of seconds."]},
                ) from None
    return 0.0


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise ApiError(
            422,
            "validation_error",
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters.",
            {"Idempotency-Key": ["Invalid length."]},
        )
    return key


def _mark_unsent(task_id) -> None:
    """Broker down at send time: flag the task so the next sweep sends it at once."""
    with current_app.extensions["studiox"].db.session_scope() as session:
        tasks.mark_unsent(session, task_id)


def _wait_for_end(session, user_id, task, wait_s: float):
    """Poll until the task ends or `wait_s` passes; holds no connection while asleep.

    Every 10 ms for the first two seconds (most tasks end by then, and a primary-key
    read is cheap), then backing off to 250 ms.
    """
    started = time.monotonic()
    deadline = started + wait_s
    delay = 0.01
    while task.status not in TERMINAL_STATUSES and time.monotonic() < deadline:
        session.close()
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        if time.monotonic() - started > 2.0:
            delay = min(delay * 1.5, 0.25)
        task = tasks.get_task(session, user_id, task.id)
    session.close()
    return task


@blueprint.post("/api/tasks")
@document(
    "Create an AI task: charges its cost and queues it (202 + Location).",
    description="With Idempotency-Key, a repeat returns the original task (200) and "
    "charges nothing; the same key with another body is 409. Prefer: wait=N (<= 60) "
    "waits for the task to end: 200 if it ended, else 202.",
    body=schemas.CreateTaskSchema,
    responses={202: schemas.TaskSchema, 200: schemas.TaskSchema},
    errors=(402, 409, 429),
    headers=(
        # What _idempotency_key() accepts: 1..255 characters once blanks are stripped.
        (
            "Idempotency-Key",
            {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX, "pattern": r"\S"},
        ),
        "Prefer",
    ),
)
@authenticated
def create_task(caller: Caller):
    body = load_json(schemas.CreateTaskSchema)
    key = _idempotency_key()
    wait_s = _prefer_wait()
    session = db_session()
    result = tasks.create_task(
        session,
        caller.user_id,
        body["type"],
        body["input"],
        webhook_url=body["webhook_url"],
        webhook_events=body["webhook_events"],
        idempotency_key=key,
        request_hash=tasks.request_fingerprint(body) if key else None,
        request_id=g.get("request_id"),
        mark_unsent=_mark_unsent,
    )
    session.commit()
    task = result.task
    if wait_s:
        task = _wait_for_end(session, caller.user_id, task, wait_s)
    ended = task.status in TERMINAL_STATUSES
    # 202 while it runs; 200 once it ended, and for a plain idempotent replay.
    status = 200 if ended or (not result.created and not wait_s) else 202
    return task_json(task), status, {"Location": f"/api/tasks/{task.id}"}


# The original product's path; same contract.
blueprint.add_url_rule("/api/tasks/create", "create_task_legacy", create_task, methods=["POST"])


@blueprint.get("/api/tasks")
@document(
    "The caller's tasks, newest first; filter by status and type.",
    query=schemas.TaskListQuerySchema,
    responses={200: schemas.TaskPageSchema},
)
@authenticated
def list_tasks(caller: Caller):
    args = load_query(schemas.TaskListQuerySchema)
    rows, next_cursor = tasks.list_tasks(
        db_session(),
        caller.user_id,
        limit=args["limit"],
        cursor=args["cursor"],
        status=args["status"],
        type_name=args["type"],
    )
    return {"items": [task_json(t) for t in rows], "next_cursor": next_cursor}


@blueprint.get("/api/tasks/<task_id>")
@document(
    "One task (poll this).",
    description="Prefer: wait=N (<= 60) long-polls: the answer comes when the task ends "
    "or N seconds pass.",
    responses={200: schemas.TaskSchema},
    errors=(404,),
    headers=("Prefer",),
)
@authenticated
def get_task(caller: Caller, task_id: str):
    wait_s = _prefer_wait()
    session = db_session()
    task = tasks.get_task(session, caller.user_id, task_id)
    if wait_s:
        task = _wait_for_end(session, caller.user_id, task, wait_s)
    return task_json(task)


@blueprint.post("/api/tasks/<task_id>/cancel")
@document(
    "Cancel a task and refund it: a queued task at once (200); a processing one stops "
    "at its next step (202, poll for `canceled`).",
    responses={200: schemas.TaskSchema, 202: schemas.TaskSchema},
    errors=(404, 409),
)
@authenticated
def cancel_task(caller: Caller, task_id: str):
    session = db_session()
    result = tasks.cancel_task(session, caller.user_id, task_id)
    session.commit()
    return task_json(result.task), 200 if result.canceled_now else 202


@functools.cache
def _input_schema_json(schema_cls) -> dict:
    """A task type's input as one self-contained JSON Schema: nested schemas go under
    `definitions`, and the references point there."""
    spec = APISpec("x", "1", "3.0.3", plugins=[MarshmallowPlugin()])
    spec.components.schema(schema_cls.__name__, schema=schema_cls)
    rendered = json.dumps(spec.to_dict()["components"]["schemas"])
    components = json.loads(rendered.replace('"#/components/schemas/', '"#/definitions/'))
    main = dict(components.pop(schema_cls.__name__))
    if components:
        main["definitions"] = components
    return main


@blueprint.get("/api/task-types")
@document(
    "The task types: cost in credits, input schema, description.",
    responses={200: schemas.TaskTypesSchema},
)
def task_types():
    return {
        "items": [
            {
                "type": t.name,
                "cost": t.cost,
                "description": t.description,
                "input_schema": _input_schema_json(t.input_schema),
                "time_limit_s": t.time_limit_s,
            }
            for t in registry.listed()
        ]
    }

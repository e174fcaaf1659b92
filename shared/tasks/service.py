"""The task lifecycle: create, read, cancel, claim, progress, finish, sweep.

queued -> processing -> succeeded | failed, and queued | processing -> canceled.
Every transition is one conditional UPDATE on `status`, so of two racing transitions
exactly one wins; every path into failed or canceled goes through `refund_task`, which
refunds at most once. Functions take the caller's Session and never commit; Celery
messages go out through the outbox after the caller commits.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Uuid, and_, bindparam, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.accounts.models import Plan, User
from shared.base import utcnow
from shared.credits import service as credits
from shared.errors import (
    ConcurrencyLimitReached,
    Conflict,
    InsufficientCredits,
    NotFound,
    ValidationFailed,
    id_or_not_found,
)
from shared.outbox import Message, send_after_commit
from shared.tasks import registry
from shared.tasks.models import (
    ACTIVE_SQL,
    ACTIVE_STATUSES,
    CANCELED,
    FAILED,
    PROCESSING,
    QUEUED,
    STATUSES,
    SUCCEEDED,
    TERMINAL_STATUSES,
    Task,
)

tasks = Task.__table__
users = User.__table__
plans = Plan.__table__

RUN_TASK = "studiox.run_task"
DELIVER_WEBHOOK = "studiox.deliver_webhook"
WEBHOOK_EVENTS = ("completed", "succeeded", "failed", "canceled")


def request_fingerprint(body: dict) -> str:
    """Stable hash of a create request, to tell a replay from a different request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_task_message(
    task_id: uuid.UUID, type_name: str, request_id: str | None, on_failure=None
) -> Message:
    """The `run_task` message, with the type's time limits (the worker enforces them)."""
    try:
        task_type = registry.get(type_name)
        soft, hard = task_type.soft_time_limit_s, task_type.time_limit_s
    except ValidationFailed:
        soft = hard = None
    return Message(
        name=RUN_TASK,
        args=[str(task_id)],
        task_id=str(task_id),
        headers={"request_id": request_id} if request_id else {},
        soft_time_limit=soft,
        time_limit=hard,
        on_failure=on_failure,
    )


@dataclass(frozen=True)
class CreateResult:
    task: Task
    created: bool


def create_task(
    session: Session,
    user_id: uuid.UUID,
    type_name: str,
    payload: dict,
    *,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    request_id: str | None = None,
    mark_unsent: Callable[[uuid.UUID], None] | None = None,
) -> CreateResult:
    """Validate, charge, and record a task; it is sent to the workers after commit.

    The charge, the ledger rows and the task row share the caller's transaction: either
    all exist or none. With an `idempotency_key`, a repeat with the same body returns the
    original task (created=False) and charges nothing; with another body it is a
    Conflict. `mark_unsent(task_id)` is called if the broker then refuses the message
    (the sweeper sends it later). The plan's limit of unfinished tasks is checked after the charge has
    locked the user's row, so concurrent requests of one user cannot overshoot it.
    A raised error (InsufficientCredits, ConcurrencyLimitReached, ...) means the caller
    rolls the unit of work back, as every boundary here does.
    """
    task_type = registry.get(type_name)
    clean_input = task_type.validate(payload)
    if webhook_events:
        unknown = sorted(set(webhook_events) - set(WEBHOOK_EVENTS))
        if unknown:
            raise ValidationFailed(
                "Unknown webhook events.",
                {"webhook_events": [f"Must be among: {', '.join(WEBHOOK_EVENTS)}."]},
            )

    if idempotency_key is not None:
        existing = _find_by_key(session, user_id, idempotency_key)
        if existing is not None:
            return CreateResult(_replay(existing, request_hash), created=False)

    task_id = uuid.uuid4()
    try:
        # A savepoint only when a concurrent request with the same key can collide.
        with session.begin_nested() if idempotency_key is not None else nullcontext():
            task = _charge_and_insert(
                session,
                task_id,
                user_id,
                task_type,
                clean_input,
                webhook_url=webhook_url,
                webhook_events=webhook_events,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                request_id=request_id,
            )
    except IntegrityError:
        if idempotency_key is None:
            raise
        existing = _find_by_key(session, user_id, idempotency_key)
        if existing is None:
            raise
        return CreateResult(_replay(existing, request_hash), created=False)

    on_failure = (lambda _exc: mark_unsent(task_id)) if mark_unsent else None
    send_after_commit(session, run_task_message(task_id, task_type.name, request_id, on_failure))
    return CreateResult(task, created=True)


def _find_by_key(session: Session, user_id: uuid.UUID, key: str) -> Task | None:
    return session.execute(
        select(Task).where(Task.user_id == user_id, Task.idempotency_key == key)
    ).scalar_one_or_none()


def _replay(existing: Task, request_hash: str | None) -> Task:
    if request_hash is not None and existing.request_hash not in (None, request_hash):
        raise Conflict(
            "This Idempotency-Key was used with a different request.",
            {"task_id": str(existing.id)},
        )
    return existing


def _charge_and_insert(session, task_id, user_id, task_type, clean_input, **fields) -> Task:
    """Charge the task's cost and insert it; then hold the plan's concurrency limit.

    The limit is counted after the charge has locked the user's row (and after our own
    insert), in a statement of its own so it sees every task committed before the lock
    was granted: concurrent creates of one user cannot overshoot it.
    """
    now = utcnow()
    inserted = session.get_bind().dialect.name == "postgresql"
    if inserted:  # charge, task and ledger rows in one statement
        cost_plan, cost_purchased = _charge_and_insert_postgresql(
            session, task_id, user_id, task_type, clean_input, now, fields
        )
    else:
        change = credits.charge_task(session, user_id, task_id, task_type.cost)
        cost_plan, cost_purchased = -change.plan_delta, -change.purchased_delta
    task = Task(
        id=task_id,
        user_id=user_id,
        type=task_type.name,
        status=QUEUED,
        input=clean_input,
        progress=0.0,
        cost=task_type.cost,
        cost_plan=cost_plan,
        cost_purchased=cost_purchased,
        artifacts=[],
        attempts=0,
        created_at=now,
        updated_at=now,
        enqueued_at=now,
        **fields,
    )
    if not inserted:  # on PostgreSQL the object only carries the inserted row back
        session.add(task)
        session.flush()  # the INSERT must run inside the savepoint that guards the key
    _hold_concurrency_limit(session, user_id)
    return task


# PostgreSQL: the charge (conditional UPDATE of the locked user row), the task and its
# ledger rows in one round trip. Same rules as credits.charge_task and _write_ledger:
# plan credits first, one ledger row per bucket, each with the total after it.
# `enqueued_at` starts optimistic: it is set back to NULL if the broker refuses the
# message, so the sweeper sends it on its next run.
_CREATE_SQL = text(
    """
    WITH old AS (
        SELECT id, plan_credits, purchased_credits FROM users WHERE id = :user_id FOR UPDATE
    ), charged AS (
        UPDATE users u
        SET plan_credits = u.plan_credits - LEAST(u.plan_credits, :cost),
            purchased_credits = u.purchased_credits - (:cost - LEAST(u.plan_credits, :cost))
        FROM old
        WHERE u.id = old.id AND u.plan_credits + u.purchased_credits >= :cost
        RETURNING old.plan_credits - u.plan_credits AS from_plan,
                  old.purchased_credits - u.purchased_credits AS from_purchased,
                  u.plan_credits + u.purchased_credits AS total_after
    ), task AS (
        INSERT INTO tasks (id, user_id, type, status, input, progress, cost, cost_plan,
                           cost_purchased, artifacts, attempts, idempotency_key, request_hash,
                           webhook_url, webhook_events, request_id, enqueued_at, created_at,
                           updated_at)
        SELECT :task_id, :user_id, :type, 'queued', CAST(:input AS jsonb), 0, :cost, from_plan,
               from_purchased, '[]'::jsonb, 0, :idempotency_key, :request_hash, :webhook_url,
               CAST(:webhook_events AS jsonb), :request_id, :now, :now, :now
        FROM charged
        RETURNING id
    ), ledger AS (
        INSERT INTO credit_ledger (user_id, delta, bucket, reason, task_id, balance_after,
                                   created_at)
        SELECT :user_id, -from_plan, 'plan', 'task_charge', :task_id,
               total_after + from_purchased, :now
        FROM charged WHERE from_plan > 0
        UNION ALL
        SELECT :user_id, -from_purchased, 'purchased', 'task_charge', :task_id, total_after, :now
        FROM charged WHERE from_purchased > 0
    )
    SELECT from_plan, from_purchased FROM charged
    """
)


def _charge_and_insert_postgresql(session, task_id, user_id, task_type, clean_input, now, fields):
    row = session.execute(
        _CREATE_SQL,
        {
            "user_id": user_id,
            "task_id": task_id,
            "type": task_type.name,
            "cost": task_type.cost,
            "input": json.dumps(clean_input),
            "webhook_events": json.dumps(fields["webhook_events"])
            if fields.get("webhook_events") is not None
            else None,
            "idempotency_key": fields.get("idempotency_key"),
            "request_hash": fields.get("request_hash"),
            "webhook_url": fields.get("webhook_url"),
            "request_id": fields.get("request_id"),
            "now": now,
        },
    ).first()
    if row is None:
        raise InsufficientCredits(
            required=task_type.cost, available=credits.available_credits(session, user_id)
        )
    return row[0], row[1]


# The limit and the count in one statement of their own (see _charge_and_insert). The
# status condition is literal so the partial index ix_tasks_user_id_active serves it.
_ACTIVE_COUNT_SQL = text(
    f"""
    SELECT plans.max_concurrent_tasks,
           (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id AND tasks.{ACTIVE_SQL})
    FROM users JOIN plans ON plans.id = users.plan_id
    WHERE users.id = :user_id
    """
).bindparams(bindparam("user_id", type_=Uuid))


def _hold_concurrency_limit(session: Session, user_id: uuid.UUID) -> None:
    limit, active = session.execute(_ACTIVE_COUNT_SQL, {"user_id": user_id}).one()
    if active > limit:  # `active` includes the task just inserted
        raise ConcurrencyLimitReached(
            f"Your plan runs at most {limit} tasks at once; wait for one to finish.",
            {"limit": limit, "active": active - 1},
        )


def get_task(session: Session, user_id: uuid.UUID, task_id: uuid.UUID | str) -> Task:
    """One of the user's tasks; someone else's is NotFound, as is a malformed id."""
    task_uuid = id_or_not_found(task_id, "No such task.")
    task = session.execute(
        select(Task)
        .where(Task.id == task_uuid, Task.user_id == user_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if task is None:
        raise NotFound("No such task.")
    return task


def encode_cursor(created_at: datetime, row_id) -> str:
    raw = f"{created_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = base64.urlsafe_b64decode(padded).decode().split("|", 1)
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("Invalid cursor.", {"cursor": ["Not a cursor we issued."]}) from None


def list_tasks(
    session: Session,
    user_id: uuid.UUID,
    *,
    limit: int = 20,
    cursor: str | None = None,
    status: str | None = None,
    type_name: str | None = None,
) -> tuple[list[Task], str | None]:
    """The user's tasks, newest first, keyset-paginated on (created_at, id)."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(
            "Unknown status.", {"status": [f"Must be one of: {', '.join(STATUSES)}."]}
        )
    query = select(Task).where(Task.user_id == user_id)
    if status:
        query = query.where(Task.status == status)
    if type_name:
        query = query.where(Task.type == type_name)
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        try:
            row_uuid = uuid.UUID(row_id)
        except ValueError:
            raise ValidationFailed(
                "Invalid cursor.", {"cursor": ["Not a cursor we issued."]}
            ) from None
        query = query.where(
            or_(
                Task.created_at < created_at,
                and_(Task.created_at == created_at, Task.id < row_uuid),
            )
        )
    rows = list(
        session.execute(
            query.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)
        ).scalars()
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return rows, next_cursor


def _webhook_message(task_row) -> Message | None:
    """The webhook delivery for a task that just ended, if it asked for one."""
    url, events, status, task_id = task_row
    if not url:
        return None
    wanted = set(events or ["completed"])
    if "completed" not in wanted and status not in wanted:
        return None
    return Message(name=DELIVER_WEBHOOK, args=[str(task_id), status])


def _end(session: Session, task_id: uuid.UUID, where, values: dict, refund: bool) -> bool:
    """Move a task into a terminal state if `where` still holds; refund if asked.

    Returns whether this call made the transition.
    """
    now = utcnow()
    row = session.execute(
        update(tasks)
        .where(tasks.c.id == task_id, *where)
        .values(completed_at=now, updated_at=now, lease_expires_at=None, **values)
        .returning(tasks.c.webhook_url, tasks.c.webhook_events, tasks.c.status, tasks.c.id)
    ).first()
    if row is None:
        return False
    if refund:
        credits.refund_task(session, task_id, note=values.get("status"))
    message = _webhook_message(row)
    if message is not None:
        send_after_commit(session, message)
    return True


@dataclass(frozen=True)
class CancelResult:
    task: Task
    canceled_now: bool


def cancel_task(session: Session, user_id: uuid.UUID, task_id: uuid.UUID | str) -> CancelResult:
    """Cancel a task: a queued one at once (refunded); a processing one is asked to stop.

    The worker honours the request between steps and ends the task canceled and
    refunded. A finished task is a Conflict.
    """
    task = get_task(session, user_id, task_id)
    if task.status in TERMINAL_STATUSES:
        raise Conflict(f"The task has already ended ({task.status}).", {"status": task.status})
    ended = _end(
        session,
        task.id,
        [tasks.c.status == QUEUED],
        {"status": CANCELED, "error": {"code": "canceled", "message": "Canceled by the user."}},
        refund=True,
    )
    if not ended:
        now = utcnow()
        session.execute(
            update(tasks)
            .where(tasks.c.id == task.id, tasks.c.status == PROCESSING)
            .values(
                cancel_requested_at=func.coalesce(tasks.c.cancel_requested_at, now), updated_at=now
            )
        )
    task = get_task(session, user_id, task.id)
    if task.status in (SUCCEEDED, FAILED):  # it ended in the meantime
        raise Conflict(f"The task has already ended ({task.status}).", {"status": task.status})
    return CancelResult(task, canceled_now=ended)


# --- worker side -------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedTask:
    id: uuid.UUID
    user_id: uuid.UUID
    type: str
    input: dict
    attempts: int
    request_id: str | None


# The worker's statements run for every task, so they are built once: building a Core
# statement costs more CPU than PostgreSQL takes to run it (about 1.5 ms against 0.3 ms
# here, measured); a prebuilt one only binds its parameters. The shared parameters are
# typed, so every dialect (SQLite too, for `make run`) converts them alike.
_NOW = bindparam("now", type_=tasks.c.updated_at.type)
_LEASE_UNTIL = bindparam("lease_until", type_=tasks.c.lease_expires_at.type)
_CLAIM = (
    update(tasks)
    .where(
        tasks.c.id == bindparam("task_id"),
        tasks.c.cancel_requested_at.is_(None),
        or_(
            tasks.c.status == QUEUED,
            and_(tasks.c.status == PROCESSING, tasks.c.lease_expires_at < _NOW),
        ),
    )
    .values(
        status=PROCESSING,
        attempts=tasks.c.attempts + 1,
        started_at=func.coalesce(tasks.c.started_at, _NOW),
        lease_expires_at=_LEASE_UNTIL,
        updated_at=_NOW,
    )
    .returning(
        tasks.c.id,
        tasks.c.user_id,
        tasks.c.type,
        tasks.c.input,
        tasks.c.attempts,
        tasks.c.request_id,
    )
)
_STILL_WANTED = select(tasks.c.status, tasks.c.cancel_requested_at).where(
    tasks.c.id == bindparam("task_id")
)
_RECORD_PROGRESS = (
    update(tasks)
    .where(tasks.c.id == bindparam("task_id"), tasks.c.status == PROCESSING)
    .values(
        progress=bindparam("progress"),
        lease_expires_at=_LEASE_UNTIL,
        updated_at=_NOW,
    )
    .returning(tasks.c.cancel_requested_at)
)
_SUCCEED = (
    update(tasks)
    .where(
        tasks.c.id == bindparam("task_id"),
        tasks.c.status == PROCESSING,
        tasks.c.cancel_requested_at.is_(None),
    )
    .values(
        status=SUCCEEDED,
        output=bindparam("output"),
        artifacts=bindparam("artifacts"),
        progress=1.0,
        completed_at=_NOW,
        updated_at=_NOW,
        lease_expires_at=None,
    )
    .returning(tasks.c.webhook_url, tasks.c.webhook_events, tasks.c.status, tasks.c.id)
)


def _lease_params(task_id: uuid.UUID, lease_s: int) -> dict:
    now = utcnow()
    return {"task_id": task_id, "now": now, "lease_until": now + timedelta(seconds=lease_s)}


def claim_task(session: Session, task_id: uuid.UUID, lease_s: int) -> ClaimedTask | None:
    """Take a task for running: only a queued one, or a processing one whose lease expired.

    Returns None when someone else holds it or it has ended (a duplicate message is then
    harmless).
    """
    row = session.execute(_CLAIM, _lease_params(task_id, lease_s)).first()
    return ClaimedTask(*row) if row else None


def still_wanted(session: Session, task_id: uuid.UUID) -> bool:
    """Whether a running task should go on: still processing, no cancel requested."""
    row = session.execute(_STILL_WANTED, {"task_id": task_id}).first()
    return row is not None and row[0] == PROCESSING and row[1] is None


def record_progress(session: Session, task_id: uuid.UUID, progress: float, lease_s: int) -> bool:
    """Store progress and extend the lease. False when the task should stop
    (cancel requested, or it is no longer this run's)."""
    params = _lease_params(task_id, lease_s) | {"progress": min(max(progress, 0.0), 1.0)}
    row = session.execute(_RECORD_PROGRESS, params).first()
    return row is not None and row[0] is None


def succeed_task(
    session: Session, task_id: uuid.UUID, output: dict, artifacts: list[dict] | None = None
) -> bool:
    """End a processing task with its output, unless a cancel was requested meanwhile.

    One statement that moves no credits, so it is atomic on its own: the worker runs it
    without a transaction around it. False when the task is not processing or a cancel
    is pending (then `finish_canceled`, in a transaction, ends it).
    """
    now = utcnow()
    row = session.execute(
        _SUCCEED,
        {"task_id": task_id, "output": output, "artifacts": artifacts or [], "now": now},
    ).first()
    if row is None:
        return False
    message = _webhook_message(row)
    if message is not None:
        send_after_commit(session, message)
    return True


def complete_task(
    session: Session, task_id: uuid.UUID, output: dict, artifacts: list[dict] | None = None
) -> str | None:
    """End a processing task with its output; if a cancel was requested meanwhile, it
    ends canceled and refunded instead. Returns the final status, or None if the task
    was not processing (someone else ended it). Needs a transaction (the refund)."""
    if succeed_task(session, task_id, output, artifacts):
        return SUCCEEDED
    if finish_canceled(session, task_id):
        return CANCELED
    return None


def finish_canceled(session: Session, task_id: uuid.UUID) -> bool:
    """End a processing task whose cancel was requested: canceled and refunded."""
    return _end(
        session,
        task_id,
        [tasks.c.status == PROCESSING, tasks.c.cancel_requested_at.is_not(None)],
        {"status": CANCELED, "error": {"code": "canceled", "message": "Canceled by the user."}},
        refund=True,
    )


def fail_task(session: Session, task_id: uuid.UUID, code: str, message: str) -> bool:
    """End an unfinished task as failed and refund it (at most once)."""
    return _end(
        session,
        task_id,
        [tasks.c.status.in_(ACTIVE_STATUSES)],
        {"status": FAILED, "error": {"code": code, "message": message[:1000]}},
        refund=True,
    )


def release_for_retry(session: Session, task_id: uuid.UUID, delay_s: float) -> bool:
    """Put a processing task back in the queue for another attempt after `delay_s`."""
    now = utcnow()
    return (
        session.execute(
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == PROCESSING)
            .values(
                status=QUEUED,
                lease_expires_at=None,
                enqueued_at=now + timedelta(seconds=delay_s),
                updated_at=now,
            )
        ).rowcount
        == 1
    )


@dataclass(frozen=True)
class SweepResult:
    requeued: list[uuid.UUID]
    failed: list[uuid.UUID]


def sweep(
    session: Session,
    *,
    now: datetime | None = None,
    unsent_grace_s: float = 5.0,
    requeue_after_s: float = 300.0,
    batch_size: int = 500,
) -> SweepResult:
    """Make sure every accepted task ends (invariant 4).

    - queued tasks the broker never got (`enqueued_at` NULL, older than a few seconds),
      or whose message has waited longer than `requeue_after_s` (lost by the broker), are
      sent again; running one twice is harmless because claiming is atomic;
    - processing tasks whose lease expired (their worker died) go back to the queue, or
      fail and are refunded once their type's retry budget is spent.
    Rows are taken FOR UPDATE SKIP LOCKED (a no-op on SQLite), so two beat processes can
    sweep at once without doing anything twice.
    """
    now = now or utcnow()
    stale = (
        select(tasks.c.id)
        .where(
            tasks.c.status == QUEUED,
            or_(
                and_(
                    tasks.c.enqueued_at.is_(None),
                    tasks.c.created_at < now - timedelta(seconds=unsent_grace_s),
                ),
                tasks.c.enqueued_at < now - timedelta(seconds=requeue_after_s),
            ),
        )
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    requeued = list(
        session.execute(
            update(tasks)
            .where(tasks.c.id.in_(stale.scalar_subquery()))
            .values(enqueued_at=now, updated_at=now)
            .returning(tasks.c.id, tasks.c.type, tasks.c.request_id)
        ).all()
    )

    failed: list[uuid.UUID] = []
    expired = session.execute(
        select(
            tasks.c.id,
            tasks.c.type,
            tasks.c.attempts,
            tasks.c.request_id,
            tasks.c.cancel_requested_at,
        )
        .where(tasks.c.status == PROCESSING, tasks.c.lease_expires_at < now)
        # Refunds lock users rows: take them in one order, so two sweepers cannot deadlock.
        .order_by(tasks.c.user_id, tasks.c.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    for task_id, type_name, attempts, request_id, cancel_requested_at in expired:
        if cancel_requested_at is not None:
            finish_canceled(session, task_id)
            continue
        try:
            budget = registry.get(type_name).max_attempts
        except ValidationFailed:
            budget = 1
        if attempts >= budget:
            if fail_task(
                session,
                task_id,
                "worker_lost",
                f"The worker running this task stopped {attempts} time(s); giving up.",
            ):
                failed.append(task_id)
        else:
            session.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.status == PROCESSING)
                .values(status=QUEUED, lease_expires_at=None, enqueued_at=now, updated_at=now)
            )
            requeued.append((task_id, type_name, request_id))

    for task_id, type_name, request_id in requeued:
        send_after_commit(session, run_task_message(task_id, type_name, request_id))
    return SweepResult([row[0] for row in requeued], failed)


def mark_unsent(session: Session, task_id: uuid.UUID) -> None:
    """The broker refused the task's message: let the next sweep send it at once."""
    session.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.status == QUEUED)
        .values(enqueued_at=None)
    )

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.base import Base, JSONType, TZDateTime, utcnow

QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELED = (
    "queued",
    "processing",
    "succeeded",
    "failed",
    "canceled",
)
STATUSES = (QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELED)
ACTIVE_STATUSES = (QUEUED, PROCESSING)
TERMINAL_STATUSES = (SUCCEEDED, FAILED, CANCELED)
# Literal, not bound: the planner can only use the partial indexes below when a query's
# condition is this very text (a bound parameter does not prove it).
ACTIVE_SQL = "status IN ('queued', 'processing')"


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'processing', 'succeeded', 'failed', 'canceled')",
            name="status_known",
        ),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
        CheckConstraint(
            "cost >= 0 AND cost_plan >= 0 AND cost_purchased >= 0 "
            "AND cost_plan + cost_purchased = cost",
            name="cost_split",
        ),
        Index(
            "uq_tasks_user_id_idempotency_key",
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
        # The list endpoint: newest first per user, keyset-paginated on (created_at, id).
        Index("ix_tasks_user_id_created_at_id", "user_id", "created_at", "id"),
        # The sweeper only ever looks at unfinished tasks.
        Index(
            "ix_tasks_active",
            "status",
            "updated_at",
            postgresql_where=text(ACTIVE_SQL),
            sqlite_where=text(ACTIVE_SQL),
        ),
        # The plan's concurrency limit counts a user's unfinished tasks on every create:
        # this index holds only those, so the count does not grow with the user's history.
        Index(
            "ix_tasks_user_id_active",
            "user_id",
            postgresql_where=text(ACTIVE_SQL),
            sqlite_where=text(ACTIVE_SQL),
        ),
    )

    # Also the Celery task id.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    input: Mapped[dict] = mapped_column(JSONType)
    output: Mapped[dict | None] = mapped_column(JSONType)
    error: Mapped[dict | None] = mapped_column(JSONType)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[int] = mapped_column(Integer)
    cost_plan: Mapped[int] = mapped_column(Integer, default=0)
    cost_purchased: Mapped[int] = mapped_column(Integer, default=0)
    refunded_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # sha256 of the create request body: the same key with another body is a 409.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[list | None] = mapped_column(JSONType)
    artifacts: Mapped[list] = mapped_column(JSONType, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(TZDateTime)

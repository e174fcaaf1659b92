from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.base import Base, BigIntPK, TZDateTime, utcnow

BUCKETS = ("plan", "purchased")
REASONS = (
    "signup_grant",
    "task_charge",
    "task_refund",
    "monthly_reset",
    "purchase",
    "admin_grant",
    "plan_change",
    "chargeback",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class CreditLedger(Base):
    """Append-only: one row per bucket per balance change.

    The id is a bigint identity rather than a UUID so that id order is insertion order:
    "newest first" and the audit both rely on it.
    """

    __tablename__ = "credit_ledger"
    __table_args__ = (
        CheckConstraint(_in("bucket", BUCKETS), name="bucket_known"),
        CheckConstraint(_in("reason", REASONS), name="reason_known"),
        CheckConstraint("balance_after >= 0", name="balance_after_non_negative"),
        # Invariant 2: a task is charged at most once and refunded at most once, per bucket.
        Index(
            "uq_credit_ledger_task_reason_bucket",
            "task_id",
            "reason",
            "bucket",
            unique=True,
            postgresql_where=text("task_id IS NOT NULL"),
            sqlite_where=text("task_id IS NOT NULL"),
        ),
        # Invariant 5: a Stripe event moves credits at most once, per bucket.
        Index(
            "uq_credit_ledger_stripe_event_reason_bucket",
            "stripe_event_id",
            "reason",
            "bucket",
            unique=True,
            postgresql_where=text("stripe_event_id IS NOT NULL"),
            sqlite_where=text("stripe_event_id IS NOT NULL"),
        ),
        Index("ix_credit_ledger_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    delta: Mapped[int] = mapped_column(Integer)
    bucket: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(String(500))
    balance_after: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)

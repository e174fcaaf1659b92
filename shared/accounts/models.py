from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.base import Base, JSONType, TZDateTime, utcnow

FREE_PLAN_ID = "free"


class Plan(Base):
    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("monthly_credits >= 0", name="monthly_credits_non_negative"),
        CheckConstraint("price_cents >= 0", name="price_non_negative"),
        CheckConstraint("max_concurrent_tasks > 0", name="max_concurrent_positive"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    monthly_credits: Mapped[int] = mapped_column(Integer)
    price_cents: Mapped[int] = mapped_column(Integer, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    features: Mapped[list] = mapped_column(JSONType, default=list)
    max_concurrent_tasks: Mapped[int] = mapped_column(Integer, default=2)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # Invariant 1: neither bucket is ever negative, whatever the code above does.
        CheckConstraint("plan_credits >= 0", name="plan_credits_non_negative"),
        CheckConstraint("purchased_credits >= 0", name="purchased_credits_non_negative"),
        Index("ix_users_credits_reset_at", "credits_reset_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    clerk_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(255))
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"), default=FREE_PLAN_ID)
    plan_credits: Mapped[int] = mapped_column(Integer, default=0)
    purchased_credits: Mapped[int] = mapped_column(Integer, default=0)
    credits_reset_at: Mapped[datetime] = mapped_column(TZDateTime)
    # What the monthly resets count from (sign-up, or Stripe's period end): whole months
    # after it, so a day clamped in a short month (Jan 31 -> Feb 28) comes back (Mar 31).
    # NULL: count from credits_reset_at (the first reset fills it in).
    credits_reset_anchor: Mapped[datetime | None] = mapped_column(TZDateTime)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255))
    subscription_status: Mapped[str | None] = mapped_column(String(32))
    # Stripe's `created` of the last subscription event applied: older events are stale.
    subscription_event_at: Mapped[int | None] = mapped_column(Integer)
    webhook_secret: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)

    plan: Mapped[Plan] = relationship(lazy="joined")
    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="user")

    @property
    def total_credits(self) -> int:
        return self.plan_credits + self.purchased_credits


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32))
    # sha256 of the secret: the secret itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime)

    user: Mapped[User] = relationship(back_populates="api_keys")

"""Helpers for credit-ledger tests: users whose balances are backed by ledger rows.

Every user made here satisfies invariant 1 from the start (its buckets come from
ledger-writing grants, or from ledger rows inserted alongside in bulk), so a test can
assert `credits.audit(session) == []` at any point.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from shared.accounts.models import Plan, User
from shared.credits import service as credits
from shared.credits.models import CreditLedger
from shared.tasks.models import FAILED, Task

users = User.__table__
ledger = CreditLedger.__table__

# Far enough ahead that no reset touches the user unless a test asks for it.
NOT_DUE = datetime(2999, 1, 1, tzinfo=UTC)


def make_user(
    session: Session,
    *,
    plan_credits: int = 0,
    purchased_credits: int = 0,
    plan_id: str = "free",
    reset_at: datetime = NOT_DUE,
    anchor: datetime | None = None,
    clerk_id: str | None = None,
) -> uuid.UUID:
    """A user with the given buckets, each put there by a ledger-writing grant. Without
    `anchor`, resets count from `reset_at` (as for users from before the anchor)."""
    user_id = uuid.uuid4()
    session.execute(
        insert(users).values(
            id=user_id,
            clerk_id=clerk_id or f"user_{user_id.hex[:12]}",
            plan_id=plan_id,
            plan_credits=0,
            purchased_credits=0,
            credits_reset_at=reset_at,
            credits_reset_anchor=anchor,
            created_at=datetime.now(UTC),
        )
    )
    if plan_credits:
        credits.grant(session, user_id, plan_credits, "signup_grant", bucket="plan")
    if purchased_credits:
        credits.grant(session, user_id, purchased_credits, "purchase", bucket="purchased")
    return user_id


def balance(session: Session, user_id: uuid.UUID) -> tuple[int, int]:
    """(plan_credits, purchased_credits), read fresh from the database."""
    row = session.execute(
        select(users.c.plan_credits, users.c.purchased_credits).where(users.c.id == user_id)
    ).one()
    return row[0], row[1]


def ledger_rows(session: Session, user_id: uuid.UUID, reason: str | None = None) -> list:
    query = select(ledger).where(ledger.c.user_id == user_id)
    if reason is not None:
        query = query.where(ledger.c.reason == reason)
    return session.execute(query.order_by(ledger.c.id)).all()


def record_task(session: Session, user_id: uuid.UUID, task_id: uuid.UUID, change) -> None:
    """The task row a charge belongs to, with its split, as `create_task` stores it."""
    cost_plan, cost_purchased = -change.plan_delta, -change.purchased_delta
    session.add(
        Task(
            id=task_id,
            user_id=user_id,
            type="image_analysis",
            status=FAILED,
            input={},
            cost=cost_plan + cost_purchased,
            cost_plan=cost_plan,
            cost_purchased=cost_purchased,
        )
    )
    session.flush()


def allowances(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Plan.id, Plan.monthly_credits)).all())


def bulk_users(
    session: Session,
    count: int,
    *,
    prefix: str,
    base: datetime,
    step: timedelta,
    cycle: int,
) -> None:
    """`count` users in one INSERT ... SELECT generate_series, plus their ledger rows.

    User g is on plan free/pro/enterprise by g % 3, holds g % 7 plan credits and g % 5
    purchased credits, and resets at `base + (g % cycle) * step`. The ledger rows
    (one signup_grant per user, one purchase where purchased > 0) are inserted in two
    more set-based statements, so the audit holds for all of them.
    """
    session.execute(
        text(
            """
            INSERT INTO users (id, clerk_id, plan_id, plan_credits, purchased_credits,
                               credits_reset_at, created_at)
            SELECT gen_random_uuid(), :prefix || g,
                   (ARRAY['free', 'pro', 'enterprise'])[g % 3 + 1],
                   g % 7, g % 5, :base + (g % :cycle) * :step, now()
            FROM generate_series(1, :count) AS g
            """
        ),
        {"prefix": prefix, "base": base, "cycle": cycle, "step": step, "count": count},
    )
    session.execute(
        text(
            """
            INSERT INTO credit_ledger (user_id, delta, bucket, reason, balance_after, created_at)
            SELECT id, plan_credits, 'plan', 'signup_grant', plan_credits, now()
            FROM users WHERE clerk_id LIKE :pattern
            """
        ),
        {"pattern": f"{prefix}%"},
    )
    session.execute(
        text(
            """
            INSERT INTO credit_ledger (user_id, delta, bucket, reason, balance_after, created_at)
            SELECT id, purchased_credits, 'purchased', 'purchase',
                   plan_credits + purchased_credits, now()
            FROM users WHERE clerk_id LIKE :pattern AND purchased_credits > 0
            """
        ),
        {"pattern": f"{prefix}%"},
    )

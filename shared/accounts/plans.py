"""Reading plans (they are seeded by the first migration and editable in the database)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.accounts.models import Plan


def list_plans(session: Session) -> list[Plan]:
    return list(session.execute(select(Plan).order_by(Plan.sort_order, Plan.price_cents)).scalars())

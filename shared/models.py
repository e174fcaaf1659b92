"""Every model, imported in one place so the metadata (and Alembic) sees all tables."""

from shared.accounts.models import FREE_PLAN_ID, ApiKey, Plan, User
from shared.base import Base
from shared.billing.models import Purchase, StripeEvent
from shared.credits.models import CreditLedger
from shared.tasks.models import Task

__all__ = [
    "FREE_PLAN_ID",
    "ApiKey",
    "Base",
    "CreditLedger",
    "Plan",
    "Purchase",
    "StripeEvent",
    "Task",
    "User",
]

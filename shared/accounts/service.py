"""Accounts: provisioning callers, profiles, and per-user secrets."""

from __future__ import annotations

import base64
import secrets
import uuid

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.accounts.models import FREE_PLAN_ID, Plan, User
from shared.base import utcnow
from shared.credits import service as credits
from shared.errors import NotFound

users = User.__table__


def _insert(session: Session):
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(users)


# Every authenticated request runs it: built once (building costs more than running it).
_FIND_USER_ID = select(users.c.id).where(users.c.clerk_id == bindparam("clerk_id"))


def find_user_id(session: Session, clerk_id: str) -> uuid.UUID | None:
    return session.execute(_FIND_USER_ID, {"clerk_id": clerk_id}).scalar_one_or_none()


def provision(
    session: Session, clerk_id: str, email: str | None = None, name: str | None = None
) -> tuple[uuid.UUID, bool]:
    """Return the user for `clerk_id`, creating it on the free plan if it is new.

    Safe under concurrent first requests: the insert is ON CONFLICT DO NOTHING, so only
    one request creates the user and writes the signup grant. Returns (id, created).
    """
    existing = find_user_id(session, clerk_id)
    if existing is not None:
        return existing, False
    free = session.get(Plan, FREE_PLAN_ID)
    if free is None:
        raise NotFound("The free plan is missing: run the migrations.")
    now = utcnow()
    stmt = (
        _insert(session)
        .values(
            id=uuid.uuid4(),
            clerk_id=clerk_id,
            email=email,
            name=name,
            plan_id=FREE_PLAN_ID,
            plan_credits=0,
            purchased_credits=0,
            credits_reset_at=credits.add_months(now, 1),
            credits_reset_anchor=now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["clerk_id"])
        .returning(users.c.id)
    )
    user_id = session.execute(stmt).scalar_one_or_none()
    if user_id is None:  # another request created it first
        return find_user_id(session, clerk_id), False
    if free.monthly_credits:
        credits.grant(session, user_id, free.monthly_credits, "signup_grant", bucket="plan")
    return user_id, True


def get_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id, populate_existing=True)
    if user is None:
        raise NotFound("No such user.")
    return user


def resolve_user(session: Session, ref: str) -> User:
    """A user by id or by Clerk id (operators type either)."""
    try:
        user = session.get(User, uuid.UUID(ref))
    except ValueError:
        user = None
    if user is None:
        user = session.execute(select(User).where(User.clerk_id == ref)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"No user with id or Clerk id {ref!r}.")
    return user


def update_profile(
    session: Session, user_id: uuid.UUID, email: str | None, name: str | None
) -> None:
    """Refresh email/name from the identity provider's claims when they are given."""
    values = {k: v for k, v in {"email": email, "name": name}.items() if v}
    if values:
        session.execute(update(users).where(users.c.id == user_id).values(**values))


def webhook_secret(session: Session, user_id: uuid.UUID) -> str:
    """The user's task-webhook signing secret (`whsec_...`), created on first use."""
    secret = session.execute(
        select(users.c.webhook_secret).where(users.c.id == user_id)
    ).scalar_one()
    if secret:
        return secret
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    session.execute(
        update(users)
        .where(users.c.id == user_id, users.c.webhook_secret.is_(None))
        .values(webhook_secret=secret)
    )
    return session.execute(select(users.c.webhook_secret).where(users.c.id == user_id)).scalar_one()

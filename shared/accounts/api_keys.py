"""API keys: long-lived secrets for server-to-server callers, stored only as hashes.

A key is `sx_live_<43 url-safe characters>` (256 bits of randomness). Only its sha256 is
stored, so a database leak reveals no usable key; a plain hash (not a slow KDF) is right
here because the secret is random, not a password someone could guess. Lookups go by the
hash's unique index, so there is no secret-dependent comparison in Python to time.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from shared.accounts.models import ApiKey, User
from shared.base import utcnow
from shared.errors import Conflict, NotFound, ValidationFailed, id_or_not_found

KEY_PREFIX = "sx_live_"
# Enough of the key to recognise it in a list ("sx_live_AbCd"), far too little to use it.
DISPLAY_PREFIX_CHARS = 12
MAX_KEYS_PER_USER = 25
NAME_MAX = 100
# `last_used_at` is a hint for humans ("used 3 minutes ago"), not an audit log: writing it
# at most once a minute per key keeps a busy key from costing one UPDATE per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)

keys_table = ApiKey.__table__
users = User.__table__


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # shown to the caller once, never stored


@dataclass(frozen=True)
class KeyOwner:
    key_id: uuid.UUID
    user_id: uuid.UUID
    clerk_id: str
    touched: bool  # last_used_at was written: the caller has something to commit


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, user_id: uuid.UUID, name: str) -> CreatedKey:
    """Create a key for the user; at most MAX_KEYS_PER_USER unrevoked keys each.

    The user's row is locked first, so two concurrent requests cannot both pass the limit.
    """
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX:
        raise ValidationFailed(
            "The key needs a name.", {"name": [f"Give 1 to {NAME_MAX} characters."]}
        )
    session.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())
    active = session.execute(
        select(func.count())
        .select_from(keys_table)
        .where(keys_table.c.user_id == user_id, keys_table.c.revoked_at.is_(None))
    ).scalar_one()
    if active >= MAX_KEYS_PER_USER:
        raise Conflict(
            f"You have {active} API keys, the most allowed; revoke one first.",
            {"limit": MAX_KEYS_PER_USER},
        )
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=uuid.uuid4(),
        user_id=user_id,
        name=name,
        prefix=secret[:DISPLAY_PREFIX_CHARS],
        key_hash=hash_secret(secret),
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()  # the view returns created_at and id from the row
    return CreatedKey(key, secret)


def list_keys(session: Session, user_id: uuid.UUID) -> list[ApiKey]:
    """The user's unrevoked keys, newest first."""
    return list(
        session.execute(
            select(ApiKey)
            .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        ).scalars()
    )


def revoke_key(session: Session, user_id: uuid.UUID, key_id: uuid.UUID | str) -> None:
    """Revoke one of the user's keys; someone else's, an unknown or a revoked key is NotFound."""
    key_uuid = id_or_not_found(key_id, "No such API key.")
    revoked = session.execute(
        update(keys_table)
        .where(
            keys_table.c.id == key_uuid,
            keys_table.c.user_id == user_id,
            keys_table.c.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    ).rowcount
    if revoked != 1:
        raise NotFound("No such API key.")


def resolve_key(session: Session, secret: str, now: datetime | None = None) -> KeyOwner | None:
    """The owner of an unrevoked key, or None. Looks the key up on every call (no cache),
    so a revocation takes effect on the very next request; refreshes `last_used_at` when
    it is older than LAST_USED_RESOLUTION (the caller commits)."""
    if not secret.startswith(KEY_PREFIX):
        return None
    row = session.execute(
        select(keys_table.c.id, keys_table.c.user_id, users.c.clerk_id, keys_table.c.last_used_at)
        .join(users, users.c.id == keys_table.c.user_id)
        .where(keys_table.c.key_hash == hash_secret(secret), keys_table.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    key_id, user_id, clerk_id, last_used_at = row
    now = now or utcnow()
    stale_before = now - LAST_USED_RESOLUTION
    touched = last_used_at is None or last_used_at < stale_before
    if touched:
        # Conditional, so of many concurrent requests only the first writes.
        session.execute(
            update(keys_table)
            .where(
                keys_table.c.id == key_id,
                or_(keys_table.c.last_used_at.is_(None), keys_table.c.last_used_at < stale_before),
            )
            .values(last_used_at=now)
        )
    return KeyOwner(key_id, user_id, clerk_id, touched)

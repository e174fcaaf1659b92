"""API keys over real HTTP: create (secret once), list, use, revoke (401 at once)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared.accounts import api_keys as service
from shared.accounts.models import ApiKey
from shared.base import utcnow
from studiox_client import (
    Client,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationError,
)


@pytest.fixture()
def owner(base_url, token):
    """Signed in with a session (dev) token, as the dashboard would be."""
    with Client(base_url, token("user_keys")) as client:
        yield client


def stored_keys(database):
    with database.session_scope() as session:
        return session.execute(select(ApiKey)).scalars().all()


def test_create_list_use_and_revoke(owner, base_url, committed):
    created = owner.api_keys.create("CI server")
    assert created.key.startswith("sx_live_") and len(created.key) > 40
    assert created.prefix == created.key[:12]
    assert created.name == "CI server"

    listed = owner.api_keys.list()
    assert [(k.id, k.name, k.prefix, k.last_used_at) for k in listed] == [
        (created.id, "CI server", created.prefix, None)
    ]
    assert "key" not in listed[0].raw  # the secret is shown once, at creation

    with Client(base_url, created.key) as machine:
        assert machine.me()["clerk_id"] == "user_keys"
        assert machine.credits().total == 10
        assert owner.api_keys.list()[0].last_used_at is not None

        owner.api_keys.revoke(created)
        with pytest.raises(Unauthorized) as refused:
            machine.credits()  # the very next request, no cache to expire
        assert "revoked" in refused.value.message
    assert owner.api_keys.list() == []


def test_only_the_hash_is_stored(owner, committed):
    created = owner.api_keys.create("hash check")
    [row] = stored_keys(committed)
    assert row.key_hash == hashlib.sha256(created.key.encode()).hexdigest()
    assert created.key not in (row.name, row.prefix, row.key_hash)


def test_last_used_at_is_written_at_most_once_a_minute(owner, base_url, committed):
    created = owner.api_keys.create("busy")
    with Client(base_url, created.key) as machine:
        machine.credits()
        [first] = stored_keys(committed)
        machine.credits()
        machine.me()
        [again] = stored_keys(committed)
        assert again.last_used_at == first.last_used_at

        long_ago = utcnow() - service.LAST_USED_RESOLUTION - timedelta(seconds=5)
        with committed.session_scope() as session:
            session.execute(update(ApiKey).values(last_used_at=long_ago))
        machine.credits()
        [later] = stored_keys(committed)
        assert later.last_used_at > long_ago + timedelta(seconds=5)


def test_unknown_key_is_401(base_url, committed):
    with Client(base_url, "sx_live_" + "x" * 43) as client, pytest.raises(Unauthorized):
        client.credits()


def test_someone_elses_or_unknown_key_is_404(owner, base_url, token, committed):
    mine = owner.api_keys.create("mine")
    with Client(base_url, token("user_other")) as other:
        with pytest.raises(NotFound):
            other.api_keys.revoke(mine.id)
        with pytest.raises(NotFound):
            other.api_keys.revoke("not-a-uuid")
        assert other.api_keys.list() == []
    owner.api_keys.revoke(mine)
    with pytest.raises(NotFound):  # revoking twice: it is gone
        owner.api_keys.revoke(mine)


def test_an_api_key_cannot_mint_keys(owner, base_url, committed):
    created = owner.api_keys.create("limited")
    with Client(base_url, created.key) as machine, pytest.raises(Forbidden):
        machine.api_keys.create("escalate")
    assert [k.name for k in owner.api_keys.list()] == ["limited"]


def test_name_is_required(owner, committed):
    with pytest.raises(ValidationError) as exc:
        owner.api_keys.create("")
    assert "name" in exc.value.details


def test_keys_per_user_are_limited(owner, committed):
    for n in range(service.MAX_KEYS_PER_USER):
        owner.api_keys.create(f"key {n}")
    with pytest.raises(Conflict) as exc:
        owner.api_keys.create("one too many")
    assert exc.value.details == {"limit": service.MAX_KEYS_PER_USER}
    owner.api_keys.revoke(owner.api_keys.list()[0])
    owner.api_keys.create("room again")  # revoked keys do not count

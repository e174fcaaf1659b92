"""Billing fixtures: a fake Stripe on 127.0.0.1, an app pointed at it, signed events."""

from __future__ import annotations

import itertools
import json
import time
import uuid

import pytest
from sqlalchemy import func, select

from api import create_app
from api.auth import make_dev_token
from shared.accounts.models import User
from shared.billing.models import Purchase, StripeEvent
from shared.credits import service as credits
from shared.credits.models import CreditLedger
from tests.billing.fake_stripe import FakeStripe, sign
from tests.support.transactions import joined

WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
_event_ids = itertools.count(1)


@pytest.fixture(scope="session")
def fake_stripe():
    server = FakeStripe().start()
    yield server
    server.stop()


@pytest.fixture()
def stripe_fake(fake_stripe):
    fake_stripe.reset()
    return fake_stripe


@pytest.fixture(scope="session")
def billing_app(settings, app, fake_stripe):
    """An app with Stripe configured (the session's `app` has no key: billing is off)."""
    billing = create_app(
        settings.with_(
            stripe_secret_key="sk_test_fake",
            stripe_webhook_secret=WEBHOOK_SECRET,
            stripe_api_base=fake_stripe.url,
        )
    )
    billing.config["TESTING"] = True
    yield billing
    billing.extensions["studiox"].db.dispose()


@pytest.fixture()
def bclient(billing_app, db_session, stripe_fake):
    """A client of `billing_app` whose sessions join the test's rolled-back transaction."""
    with joined(billing_app.extensions["studiox"].db, db_session.get_bind()):
        yield billing_app.test_client()


@pytest.fixture()
def bcommitted(billing_app, committed, stripe_fake):
    """`billing_app` with real commits (tables emptied afterwards)."""
    return billing_app


def dev_headers(app, sub: str) -> dict:
    """Auth headers for `app` (the `auth` fixture needs the rolled-back transaction)."""
    token = make_dev_token(app.extensions["studiox"].settings, sub)
    return {"Authorization": f"Bearer {token}"}


def event(kind: str, obj: dict, *, created: int | None = None, ident: str | None = None) -> dict:
    return {
        "id": ident or f"evt_test_{next(_event_ids):06d}_{uuid.uuid4().hex[:6]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()) if created is None else created,
        "type": kind,
        "livemode": False,
        "data": {"object": obj},
    }


def deliver(
    client,
    evt: dict | str,
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp=None,
    signature: str | None = None,
):
    """POST an event to the webhook, signed as Stripe signs it."""
    payload = evt if isinstance(evt, str) else json.dumps(evt)
    headers = {"Content-Type": "application/json"}
    headers["Stripe-Signature"] = signature or sign(payload, secret, timestamp)
    return client.post("/api/billing/webhook", data=payload, headers=headers)


def balance(client, headers) -> dict:
    response = client.get("/api/users/credits", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def user_of(session, clerk_id: str) -> User:
    return session.execute(
        select(User).where(User.clerk_id == clerk_id).execution_options(populate_existing=True)
    ).scalar_one()


def counts(session) -> dict:
    return {
        "events": session.scalar(select(func.count()).select_from(StripeEvent)),
        "purchases": session.scalar(select(func.count()).select_from(Purchase)),
        "ledger": session.scalar(select(func.count()).select_from(CreditLedger)),
    }


def assert_audit_clean(session) -> None:
    assert credits.audit(session) == []

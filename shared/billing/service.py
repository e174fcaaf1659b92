"""Billing: Stripe customers, Checkout for credit packs and plans, the Customer Portal,
fulfilling paid Checkout Sessions, and the purchase history.

Every function takes the caller's `Session` and never commits. Money invariant kept here:
a Checkout Session grants its credits at most once, whoever fulfils it first (the webhook
or the success redirect): the `purchases.stripe_checkout_session_id` unique constraint
decides, in the same transaction as the grant.

Stripe is called through the official library's `StripeClient`, pointed at
`STRIPE_API_BASE` when set (tests run a fake Stripe on 127.0.0.1).
"""

from __future__ import annotations

import base64
import functools
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe
from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.accounts.models import FREE_PLAN_ID, Plan, User
from shared.base import utcnow
from shared.billing.models import Purchase
from shared.billing.packs import PACKS_BY_CREDITS, PACKS_BY_ID, CreditPack
from shared.config import Settings
from shared.credits import service as credits
from shared.errors import (
    BillingNotConfigured,
    Conflict,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)

log = logging.getLogger("studiox.billing")

users = User.__table__
purchases = Purchase.__table__

# Subscription statuses in which the user keeps the paid plan. `past_due` keeps it while
# Stripe retries the card; Stripe then moves the subscription to canceled or unpaid.
ACTIVE_SUBSCRIPTION_STATUSES = frozenset({"active", "trialing", "past_due"})

# Checkout success / cancel pages and the portal's return page, on the front end.
SUCCESS_PATH = "/billing/success?session_id={CHECKOUT_SESSION_ID}"
CANCEL_PATH = "/billing/cancel"
PORTAL_RETURN_PATH = "/billing"


# --- the Stripe client ----------------------------------------------------------------


def stripe_client(settings: Settings) -> stripe.StripeClient:
    """The Stripe client for these settings; BillingNotConfigured without a secret key."""
    if not settings.billing_configured:
        raise BillingNotConfigured()
    return _client(settings.stripe_secret_key, settings.stripe_api_base)


@functools.lru_cache(maxsize=8)
def _client(api_key: str, api_base: str | None) -> stripe.StripeClient:
    # A per-client base address (not the global `stripe.api_base`), so two apps with
    # different settings in one process never talk to each other's Stripe. Network
    # retries reuse one idempotency key per request, so a retried create is not doubled.
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base.rstrip("/")} if api_base else None,
        max_network_retries=2,
    )


def _stripe_call(what: str, call, *args, **kwargs):
    """Run one Stripe API call; Stripe being down or refusing us is a 503, not a 500."""
    try:
        return call(*args, **kwargs)
    except stripe.InvalidRequestError:
        raise  # the caller decides (e.g. an unknown id is a 404)
    except stripe.StripeError as exc:
        log.warning("stripe %s failed: %s", what, exc)
        raise ServiceUnavailable(
            "The payment provider is unavailable; try again shortly.", {"dependency": "stripe"}
        ) from None


def _as_dict(obj: Any) -> dict:
    return obj.to_dict() if isinstance(obj, stripe.StripeObject) else dict(obj)


def dig(obj: Any, *path: str | int, default: Any = None) -> Any:
    """`obj[a][b]...` through dicts and lists, or `default` when anything is missing."""
    for key in path:
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return default
        if obj is None:
            return default
    return obj


# --- customers and Checkout -----------------------------------------------------------


@dataclass(frozen=True)
class CheckoutStarted:
    checkout_url: str
    session_id: str


def ensure_customer(session: Session, client: stripe.StripeClient, user_id: uuid.UUID) -> str:
    """The user's Stripe customer id, creating the customer on first use.

    Concurrent first purchases create one customer: the create carries an idempotency key
    derived from the user id (Stripe answers a repeat with the same customer), and the id
    is stored with a conditional UPDATE, so the first writer wins and everyone reads it.
    Only a plain read of the user is open while Stripe is called (no locks held).
    """
    row = session.execute(
        select(users.c.stripe_customer_id, users.c.email, users.c.name, users.c.clerk_id).where(
            users.c.id == user_id
        )
    ).first()
    if row is None:
        raise NotFound("No such user.")
    if row.stripe_customer_id:
        return row.stripe_customer_id
    params: dict[str, Any] = {"metadata": {"user_id": str(user_id), "clerk_id": row.clerk_id}}
    if row.email:
        params["email"] = row.email
    if row.name:
        params["name"] = row.name
    customer = _stripe_call(
        "customers.create",
        client.v1.customers.create,
        params=params,
        options={"idempotency_key": f"studiox-customer-{user_id}"},
    )
    session.execute(
        update(users)
        .where(users.c.id == user_id, users.c.stripe_customer_id.is_(None))
        .values(stripe_customer_id=customer.id)
    )
    return session.execute(
        select(users.c.stripe_customer_id).where(users.c.id == user_id)
    ).scalar_one()


def resolve_pack(pack_id: str | None = None, amount: int | None = None) -> CreditPack:
    """The pack named by id, or by its number of credits; 422 for anything else."""
    if pack_id is not None:
        pack = PACKS_BY_ID.get(pack_id)
        field, value = "pack", pack_id
    else:
        pack = PACKS_BY_CREDITS.get(amount) if amount is not None else None
        field, value = "credits", amount
    if pack is None:
        allowed = sorted(PACKS_BY_ID) if field == "pack" else sorted(PACKS_BY_CREDITS)
        raise ValidationFailed(
            f"No credit pack {value!r}.", {field: [f"Must be one of {allowed}."]}
        )
    return pack


def _urls(settings: Settings) -> dict[str, str]:
    base = settings.frontend_url.rstrip("/")
    return {"success_url": base + SUCCESS_PATH, "cancel_url": base + CANCEL_PATH}


def start_pack_checkout(
    session: Session,
    settings: Settings,
    user_id: uuid.UUID,
    *,
    pack_id: str | None = None,
    amount: int | None = None,
) -> CheckoutStarted:
    """Create a Checkout Session (payment mode) for one credit pack.

    Nothing is granted here: the credits arrive when the paid session is fulfilled (by
    the webhook or the success redirect). The metadata carries the user, the pack and
    its credits, so fulfilment grants what the customer was shown, even if the pack's
    definition changes while they pay.
    """
    pack = resolve_pack(pack_id, amount)
    client = stripe_client(settings)
    customer_id = ensure_customer(session, client, user_id)
    metadata = {"user_id": str(user_id), "pack_id": pack.id, "credits": str(pack.credits)}
    checkout = _stripe_call(
        "checkout.sessions.create",
        client.v1.checkout.sessions.create,
        params={
            "mode": "payment",
            "customer": customer_id,
            "client_reference_id": str(user_id),
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": pack.currency,
                        "unit_amount": pack.price_cents,
                        "product_data": {"name": f"{pack.credits} StudioX credits"},
                    },
                }
            ],
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            **_urls(settings),
        },
    )
    return CheckoutStarted(checkout.url, checkout.id)


def start_subscription_checkout(
    session: Session, settings: Settings, user_id: uuid.UUID, plan_id: str
) -> CheckoutStarted:
    """Create a Checkout Session (subscription mode) for a paid plan.

    The plan itself changes when Stripe reports the subscription (webhook), never here.
    A user with a live subscription gets 409: plan changes go through the portal, so a
    customer never pays for two subscriptions at once.
    """
    plan = session.get(Plan, plan_id)
    if plan is None or plan.id == FREE_PLAN_ID or plan.price_cents <= 0:
        paid = sorted(
            p.id for p in session.execute(select(Plan).where(Plan.price_cents > 0)).scalars()
        )
        raise ValidationFailed(
            f"{plan_id!r} is not a plan you can subscribe to.",
            {"plan": [f"Must be one of {paid}."]},
        )
    status = session.execute(
        select(users.c.subscription_status).where(users.c.id == user_id)
    ).scalar_one_or_none()
    if status in ACTIVE_SUBSCRIPTION_STATUSES:
        raise Conflict(
            "You already have a subscription; change or cancel it in the billing portal.",
            {"subscription_status": status},
        )
    client = stripe_client(settings)
    customer_id = ensure_customer(session, client, user_id)
    if plan.stripe_price_id:
        line_item: dict[str, Any] = {"price": plan.stripe_price_id, "quantity": 1}
    else:
        line_item = {
            "quantity": 1,
            "price_data": {
                "currency": plan.currency,
                "unit_amount": plan.price_cents,
                "recurring": {"interval": "month"},
                "product_data": {"name": f"StudioX {plan.name}"},
            },
        }
    metadata = {"user_id": str(user_id), "plan_id": plan.id}
    checkout = _stripe_call(
        "checkout.sessions.create",
        client.v1.checkout.sessions.create,
        params={
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": str(user_id),
            "line_items": [line_item],
            "metadata": metadata,
            # On the subscription too: its events then name the plan even when the price
            # was created inline (and so is unknown to `plans.stripe_price_id`).
            "subscription_data": {"metadata": metadata},
            **_urls(settings),
        },
    )
    return CheckoutStarted(checkout.url, checkout.id)


def open_portal(session: Session, settings: Settings, user_id: uuid.UUID) -> str:
    """A Stripe Customer Portal URL; 409 when the user has never been to Checkout."""
    client = stripe_client(settings)
    customer_id = session.execute(
        select(users.c.stripe_customer_id).where(users.c.id == user_id)
    ).scalar_one_or_none()
    if not customer_id:
        raise Conflict(
            "You have no billing account yet: buy credits or subscribe first.",
            {"stripe_customer": None},
        )
    portal = _stripe_call(
        "billing_portal.sessions.create",
        client.v1.billing_portal.sessions.create,
        params={
            "customer": customer_id,
            "return_url": settings.frontend_url.rstrip("/") + PORTAL_RETURN_PATH,
        },
    )
    return portal.url


# --- fulfilling paid Checkout Sessions --------------------------------------------------


@dataclass(frozen=True)
class PackOrder:
    """What a credit-pack Checkout Session bought, read from its metadata."""

    session_id: str
    user_id: uuid.UUID
    pack_id: str | None
    credits: int
    amount_cents: int
    currency: str
    payment_intent_id: str | None


def pack_order(checkout: dict) -> PackOrder | None:
    """The pack order in a Checkout Session, or None if it is not one of ours."""
    if checkout.get("mode") != "payment":
        return None
    metadata = checkout.get("metadata") or {}
    try:
        user_id = uuid.UUID(str(metadata.get("user_id")))
    except ValueError:
        return None
    pack = PACKS_BY_ID.get(metadata.get("pack_id"))
    try:
        amount = int(metadata.get("credits") or (pack.credits if pack else 0))
    except ValueError:
        amount = 0
    if amount <= 0 or not checkout.get("id"):
        return None
    payment_intent = checkout.get("payment_intent")
    if isinstance(payment_intent, dict):  # expanded
        payment_intent = payment_intent.get("id")
    total = checkout.get("amount_total")
    return PackOrder(
        session_id=checkout["id"],
        user_id=user_id,
        pack_id=pack.id if pack else metadata.get("pack_id"),
        credits=amount,
        amount_cents=int(total) if total is not None else (pack.price_cents if pack else 0),
        currency=str(checkout.get("currency") or (pack.currency if pack else "usd"))[:3],
        payment_intent_id=payment_intent,
    )


def _insert_purchase(session: Session):
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(purchases)


def record_checkout(
    session: Session, checkout: dict, *, stripe_event_id: str | None = None
) -> Purchase | None:
    """Record a completed credit-pack Checkout Session; grant its credits if it is paid.

    At most once per session, whoever calls first (webhook or success redirect): the
    paid row is inserted, or a pending one turned paid, by one statement that returns a
    row only to the caller that made the change; concurrent callers wait on the unique
    index and then find it already paid. Only that caller grants. An unpaid but complete
    session (delayed payment methods) is kept as `pending` and grants nothing. Returns
    the purchase, or None when the session is not a pack purchase or is not complete.
    """
    order = pack_order(checkout)
    if order is None:
        return None
    if session.execute(select(users.c.id).where(users.c.id == order.user_id)).first() is None:
        log.warning("checkout %s names unknown user %s", order.session_id, order.user_id)
        return None
    values = {
        "id": uuid.uuid4(),
        "user_id": order.user_id,
        "stripe_checkout_session_id": order.session_id,
        "stripe_payment_intent_id": order.payment_intent_id,
        "pack_id": order.pack_id,
        "credits": order.credits,
        "amount_cents": order.amount_cents,
        "currency": order.currency,
        "refunded_credits": 0,
        "created_at": utcnow(),
    }
    stmt = _insert_purchase(session)
    if checkout.get("payment_status") == "paid":
        stmt = stmt.values(**values, status="paid")
        stmt = stmt.on_conflict_do_update(
            index_elements=["stripe_checkout_session_id"],
            set_={
                "status": "paid",
                "stripe_payment_intent_id": stmt.excluded.stripe_payment_intent_id,
            },
            where=purchases.c.status == "pending",
        ).returning(purchases.c.id)
        if session.execute(stmt).first() is not None:
            credits.grant(
                session,
                order.user_id,
                order.credits,
                "purchase",
                bucket="purchased",
                note=f"checkout {order.session_id} ({order.pack_id})",
                stripe_event_id=stripe_event_id,
            )
    elif checkout.get("status") == "complete":
        session.execute(
            stmt.values(**values, status="pending").on_conflict_do_nothing(
                index_elements=["stripe_checkout_session_id"]
            )
        )
    else:
        return None
    return _purchase_by_session(session, order.session_id)


def mark_checkout_failed(session: Session, checkout: dict) -> None:
    """A delayed payment failed: the pending purchase ends `failed` (nothing was granted)."""
    order = pack_order(checkout)
    if order is None:
        return
    session.execute(
        update(purchases)
        .where(
            purchases.c.stripe_checkout_session_id == order.session_id,
            purchases.c.status == "pending",
        )
        .values(status="failed")
    )


def _purchase_by_session(session: Session, session_id: str) -> Purchase | None:
    return session.execute(
        select(Purchase)
        .where(Purchase.stripe_checkout_session_id == session_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


@dataclass(frozen=True)
class CheckoutOutcome:
    """Where a Checkout Session stands for its buyer: `paid` (credits granted), `pending`
    (a delayed payment is processing), `open` (not completed), `expired`."""

    session_id: str
    status: str
    purchase: Purchase | None


def fulfil_checkout(
    session: Session, settings: Settings, user_id: uuid.UUID, checkout_session_id: str
) -> CheckoutOutcome:
    """The success redirect's path: ask Stripe about the session and fulfil it if paid.

    Idempotent with the webhook (see `record_checkout`). Someone else's session, or one
    Stripe does not know, is a 404.
    """
    client = stripe_client(settings)
    try:
        checkout = _as_dict(
            _stripe_call(
                "checkout.sessions.retrieve",
                client.v1.checkout.sessions.retrieve,
                checkout_session_id,
            )
        )
    except stripe.InvalidRequestError:
        raise NotFound("No such checkout session.") from None
    order = pack_order(checkout)
    if order is None:
        if dig(checkout, "metadata", "user_id") == str(user_id):
            raise ValidationFailed(
                "This checkout session is not a credit purchase.",
                {"session_id": ["Not a credit-pack checkout."]},
            )
        raise NotFound("No such checkout session.")
    if order.user_id != user_id:
        raise NotFound("No such checkout session.")  # someone else's: do not confirm it exists
    purchase = record_checkout(session, checkout)
    if purchase is not None:
        status = (
            "paid"
            if purchase.status in {"paid", "refunded", "partially_refunded"}
            else (purchase.status)
        )
    else:
        status = "expired" if checkout.get("status") == "expired" else "open"
    return CheckoutOutcome(order.session_id, status, purchase)


# --- history --------------------------------------------------------------------------


def _encode_cursor(purchase: Purchase) -> str:
    raw = f"{purchase.created_at.isoformat()}|{purchase.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, _, ident = base64.urlsafe_b64decode(padded).decode().partition("|")
        return datetime.fromisoformat(moment), uuid.UUID(ident)
    except ValueError:
        raise ValidationFailed("Invalid cursor.", {"cursor": ["Not a cursor we issued."]}) from None


def list_purchases(
    session: Session, user_id: uuid.UUID, *, limit: int = 20, cursor: str | None = None
) -> tuple[list[Purchase], str | None]:
    """The user's purchases, newest first; returns (page, cursor for the next page)."""
    query = select(Purchase).where(Purchase.user_id == user_id)
    if cursor:
        created_at, ident = _decode_cursor(cursor)
        query = query.where(tuple_(Purchase.created_at, Purchase.id) < (created_at, ident))
    rows = list(
        session.execute(
            query.order_by(Purchase.created_at.desc(), Purchase.id.desc()).limit(limit + 1)
        ).scalars()
    )
    if len(rows) > limit:
        return rows[:limit], _encode_cursor(rows[limit - 1])
    return rows, None

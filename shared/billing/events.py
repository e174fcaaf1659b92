"""Stripe webhook events: verified, recorded once, applied in the caller's transaction.

Invariant 5 (a Stripe event grants credits at most once, however often or in whatever
order it arrives) rests on three things, all inside the one transaction of a delivery:

1. `stripe_events`: the event id is inserted first with ON CONFLICT DO NOTHING. A
   concurrent duplicate waits on the primary key until the first delivery commits, then
   inserts nothing and does nothing; if the first rolls back, the duplicate does the work.
2. Per-object guards: one purchase row per Checkout Session, refunds tracked as a
   cumulative `refunded_credits`, subscription state compared with what was applied.
3. The ledger's unique (stripe_event_id, reason, bucket) index, as a last line.

Subscription events are order-tolerant: each user remembers the Stripe `created` time of
the last subscription event applied (`users.subscription_event_at`), older ones are
ignored, and a canceled subscription is terminal (Stripe never revives one), so a late
`created` or `updated` cannot bring a plan back.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import stripe
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.accounts.models import FREE_PLAN_ID, Plan, User
from shared.billing.models import Purchase, StripeEvent
from shared.billing.service import (
    ACTIVE_SUBSCRIPTION_STATUSES,
    dig,
    mark_checkout_failed,
    record_checkout,
)
from shared.config import Settings
from shared.credits import service as credits
from shared.errors import BillingNotConfigured, DomainError

log = logging.getLogger("studiox.billing")

users = User.__table__
plans = Plan.__table__
stripe_events = StripeEvent.__table__

SIGNATURE_TOLERANCE_S = 300

# A subscriber's own reset date is moved to the end of each paid period plus this grace,
# so the monthly beat reset does not also reset them while Stripe's renewal (normally
# within an hour of the period end) is on its way. If renewals stop without the
# subscription ending, the beat reset still runs after the grace, as a fallback.
RENEWAL_GRACE = timedelta(days=1)


class InvalidWebhook(DomainError):
    """A webhook delivery we refuse: bad signature (`invalid_signature`) or body."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def verify(settings: Settings, payload: bytes, signature: str | None) -> dict:
    """Check the Stripe-Signature header over the raw body and return the event.

    Raises InvalidWebhook for a missing or wrong signature, a timestamp more than five
    minutes off, or a body that is not a Stripe event; BillingNotConfigured (503, so
    Stripe retries later) when no webhook secret is set.
    """
    if not settings.stripe_webhook_secret:
        raise BillingNotConfigured("Stripe webhooks are not configured on this server.")
    if not signature:
        raise InvalidWebhook("invalid_signature", "The Stripe-Signature header is missing.")
    try:
        # The check `stripe.Webhook.construct_event` makes, without its object building,
        # which fails with AttributeError on JSON that is not an object: we parse below.
        stripe.WebhookSignature.verify_header(
            payload, signature, settings.stripe_webhook_secret, tolerance=SIGNATURE_TOLERANCE_S
        )
    except stripe.SignatureVerificationError:
        raise InvalidWebhook(
            "invalid_signature", "The Stripe signature is invalid or too old."
        ) from None
    except ValueError:  # the body is not UTF-8
        raise InvalidWebhook("bad_request", "The body is not a JSON Stripe event.") from None
    if _signed_at(signature) > time.time() + SIGNATURE_TOLERANCE_S:
        # The library only refuses old timestamps; a far-future one is as suspicious.
        raise InvalidWebhook("invalid_signature", "The Stripe signature is dated in the future.")
    try:
        event = json.loads(payload)
    except ValueError:
        raise InvalidWebhook("bad_request", "The body is not JSON.") from None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and event["id"]
        and isinstance(event.get("type"), str)
        and isinstance(event.get("created"), int)
        and isinstance(dig(event, "data", "object"), dict)
    ):
        raise InvalidWebhook("bad_request", "The body is not a Stripe event.")
    return event


def _signed_at(signature: str) -> int:
    # Only called once the library has parsed and accepted the header.
    for item in signature.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            return int(value)
    return 0


def process(session: Session, event: dict) -> str:
    """Apply one verified event at most once: "processed", "duplicate" or "ignored"."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    recorded = session.execute(
        insert(stripe_events)
        .values(id=event["id"], type=event["type"][:100], created_at=datetime.now(UTC))
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(stripe_events.c.id)
    ).first()
    if recorded is None:
        log.info("stripe event %s (%s) already processed", event["id"], event["type"])
        return "duplicate"
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return "ignored"
    handler(session, event, event["data"]["object"])
    return "processed"


# --- credit packs ---------------------------------------------------------------------


def _checkout_completed(session: Session, event: dict, checkout: dict) -> None:
    # `completed` with payment_status "unpaid" (bank debits and the like) only records a
    # pending purchase; `async_payment_succeeded` later carries "paid" and grants.
    record_checkout(session, checkout, stripe_event_id=event["id"])


def _checkout_failed(session: Session, event: dict, checkout: dict) -> None:
    mark_checkout_failed(session, checkout)


def _charge_refunded(session: Session, event: dict, charge: dict) -> None:
    """Claw back purchased credits in proportion to what was refunded, at most once.

    `amount_refunded` is cumulative, so every refund event says how much of the purchase
    is refunded in total; only the part not yet clawed back is taken (and never more
    than the user still has: the balance stops at zero, the ledger shows what was taken).
    """
    payment_intent = charge.get("payment_intent")
    if isinstance(payment_intent, dict):
        payment_intent = payment_intent.get("id")
    if not payment_intent:
        return
    purchase = session.execute(
        select(Purchase)
        .where(Purchase.stripe_payment_intent_id == payment_intent)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if purchase is None or purchase.status not in {"paid", "partially_refunded"}:
        log.info("charge.refunded %s: no paid purchase for %s", event["id"], payment_intent)
        return
    paid = int(charge.get("amount") or purchase.amount_cents or 0)
    refunded = int(charge.get("amount_refunded") or 0)
    fully = charge.get("refunded") is True or (paid > 0 and refunded >= paid)
    target = purchase.credits if fully else (purchase.credits * refunded // paid if paid else 0)
    missing = target - purchase.refunded_credits
    if missing <= 0:
        return
    credits.claw_back(
        session,
        purchase.user_id,
        missing,
        "chargeback",
        note=f"refund of checkout {purchase.stripe_checkout_session_id}",
        stripe_event_id=event["id"],
    )
    purchase.refunded_credits = target
    purchase.status = "refunded" if target >= purchase.credits else "partially_refunded"


# --- subscriptions --------------------------------------------------------------------


def _lock_user(session: Session, customer_id: str | None, user_ref: str | None):
    """The user row for a Stripe customer (or the user id in metadata), locked so the
    events of one user apply one after another."""
    row = None
    if customer_id:
        row = session.execute(
            select(users).where(users.c.stripe_customer_id == customer_id).with_for_update()
        ).first()
    if row is None and user_ref:
        try:
            row = session.execute(
                select(users).where(users.c.id == uuid.UUID(user_ref)).with_for_update()
            ).first()
        except ValueError:
            row = None
    return row


def _plan_for_subscription(session: Session, subscription: dict) -> str | None:
    """The plan a subscription pays for: its price's `plans.stripe_price_id`, else the
    `plan_id` we put in its metadata at Checkout (inline prices have unknown ids)."""
    price = dig(subscription, "items", "data", 0, "price") or dig(subscription, "plan") or {}
    price_id = price.get("id") if isinstance(price, dict) else price
    if price_id:
        plan_id = session.execute(
            select(plans.c.id).where(plans.c.stripe_price_id == price_id)
        ).scalar_one_or_none()
        if plan_id:
            return plan_id
    for candidate in (
        dig(subscription, "metadata", "plan_id"),
        dig(price, "metadata", "plan_id") if isinstance(price, dict) else None,
    ):
        if candidate and candidate != FREE_PLAN_ID and session.get(Plan, candidate) is not None:
            return candidate
    return None


def _period_end(obj: dict) -> int | None:
    # Newer Stripe API versions moved the period from the subscription to its items.
    end = obj.get("current_period_end") or dig(obj, "items", "data", 0, "current_period_end")
    return end if isinstance(end, int) else None


def _move_reset_date(session: Session, user_id: uuid.UUID, period_end: int | None) -> None:
    if period_end is None:
        return
    reset_at = datetime.fromtimestamp(period_end, UTC) + RENEWAL_GRACE
    session.execute(
        update(users)
        .where(users.c.id == user_id, users.c.credits_reset_at < reset_at)
        .values(credits_reset_at=reset_at, credits_reset_anchor=reset_at)
    )


def _subscription_changed(session: Session, event: dict, subscription: dict) -> None:
    """Bring the user's plan in line with the subscription's state in this event.

    Paid plan while active/trialing/past_due, free once canceled/unpaid/expired, no
    change while incomplete (the first payment is not through yet). Plan credits move
    through `change_plan` (upgrade tops up, downgrade caps), only when the plan changes.
    """
    kind = event["type"]
    sub_id = subscription.get("id")
    created = event["created"]
    user = _lock_user(
        session, subscription.get("customer"), dig(subscription, "metadata", "user_id")
    )
    if user is None or not sub_id:
        log.warning(
            "%s %s: no user for customer %s", kind, event["id"], subscription.get("customer")
        )
        return
    status = "canceled" if kind == "customer.subscription.deleted" else subscription.get("status")
    same = user.stripe_subscription_id == sub_id
    if same and user.subscription_status == "canceled":
        return  # a canceled subscription never comes back: this event is late
    if same and kind == "customer.subscription.created":
        return  # `created` is a subscription's first event; a later state is already applied
    if user.subscription_event_at is not None and created < user.subscription_event_at:
        return  # stale: a newer subscription event has been applied
    if (
        not same
        and user.subscription_status in ACTIVE_SUBSCRIPTION_STATUSES
        and status not in ACTIVE_SUBSCRIPTION_STATUSES
    ):
        return  # another (older) subscription ending does not end the live one

    if status in ACTIVE_SUBSCRIPTION_STATUSES:
        plan_id = _plan_for_subscription(session, subscription)
        if plan_id is None:
            log.error(
                "%s %s: subscription %s has a price no plan matches (set plans.stripe_price_id)",
                kind,
                event["id"],
                sub_id,
            )
    elif status == "incomplete":
        plan_id = None  # wait for the payment
    else:
        plan_id = FREE_PLAN_ID

    session.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(
            stripe_subscription_id=sub_id,
            subscription_status=str(status)[:32] if status else None,
            subscription_event_at=max(created, user.subscription_event_at or 0),
        )
    )
    if plan_id is not None and plan_id != user.plan_id:
        credits.change_plan(session, user.id, plan_id, stripe_event_id=event["id"])
    if plan_id is not None and plan_id != FREE_PLAN_ID:
        _move_reset_date(session, user.id, _period_end(subscription))


def _invoice_paid(session: Session, event: dict, invoice: dict) -> None:
    """A paid renewal invoice tops plan credits up to the plan's allowance (no rollover
    beyond it) and moves the reset date to the end of the paid period (+ grace).

    Only `subscription_cycle` invoices renew credits: the first invoice's credits come
    with the plan change itself. Invoices for a subscription that is not the user's
    live one are ignored. At most once per event (stripe_events, and the ledger's
    unique index on the event id).
    """
    sub_id = invoice.get("subscription") or dig(
        invoice, "parent", "subscription_details", "subscription"
    )
    if isinstance(sub_id, dict):
        sub_id = sub_id.get("id")
    if not sub_id:
        return  # a one-off invoice: nothing to renew
    user = _lock_user(session, invoice.get("customer"), None)
    if (
        user is None
        or user.stripe_subscription_id != sub_id
        or user.subscription_status not in ACTIVE_SUBSCRIPTION_STATUSES
        or user.plan_id == FREE_PLAN_ID
    ):
        log.info("invoice.paid %s: subscription %s is not a live one here", event["id"], sub_id)
        return
    if invoice.get("billing_reason") == "subscription_cycle":
        allowance = session.execute(
            select(plans.c.monthly_credits).where(plans.c.id == user.plan_id)
        ).scalar_one()
        # The user row is locked (above), so this difference cannot go stale.
        missing = allowance - user.plan_credits
        if missing > 0:
            credits.grant(
                session,
                user.id,
                missing,
                "monthly_reset",
                bucket="plan",
                note=f"renewal, invoice {invoice.get('id')}",
                stripe_event_id=event["id"],
            )
    period_end = dig(invoice, "lines", "data", 0, "period", "end") or invoice.get("period_end")
    _move_reset_date(session, user.id, period_end if isinstance(period_end, int) else None)


HANDLERS: dict[str, Callable[[Session, dict, dict], None]] = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "checkout.session.async_payment_failed": _checkout_failed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_changed,
    "invoice.paid": _invoice_paid,
    "charge.refunded": _charge_refunded,
}

EVENT_TYPES = tuple(HANDLERS)

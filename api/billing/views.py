"""Plans, credit purchases, subscriptions and Stripe webhooks."""

from __future__ import annotations

from flask import Blueprint, current_app, request

from api.auth import Caller, authenticated
from api.billing import schemas
from api.db import db_session
from api.errors import ApiError
from api.openapi import document
from api.schemas import PageQuerySchema, load_json, load_query
from shared.accounts.plans import list_plans
from shared.billing import events
from shared.billing import service as billing
from shared.billing.packs import CREDIT_PACKS

blueprint = Blueprint("billing", __name__, url_prefix="/api/billing")


def _settings():
    return current_app.extensions["studiox"].settings


def _checkout_json(started: billing.CheckoutStarted) -> dict:
    return {"checkout_url": started.checkout_url, "session_id": started.session_id}


@blueprint.get("/plans")
@document(
    "The plans and the credit packs for sale.", responses={200: schemas.PlansSchema}, errors=(503,)
)
def plans():
    return {
        "plans": [schemas.plan_json(plan) for plan in list_plans(db_session())],
        "credit_packs": [schemas.pack_json(pack) for pack in CREDIT_PACKS],
    }


@blueprint.post("/purchase-credits")
@document(
    "Start a Stripe Checkout for a credit pack.",
    description='Send `{"pack": "credits_100"}` or `{"credits": 100}` (one of the pack '
    "sizes). The credits arrive when the paid session is fulfilled (the "
    "`checkout.session.completed` webhook, or `POST /api/billing/fulfill`). "
    "503 `billing_not_configured` without STRIPE_SECRET_KEY.",
    body=schemas.PurchaseCreditsSchema,
    responses={200: schemas.CheckoutSchema},
    errors=(503,),
)
@authenticated
def purchase_credits(caller: Caller):
    args = load_json(schemas.PurchaseCreditsSchema)
    session = db_session()
    started = billing.start_pack_checkout(
        session, _settings(), caller.user_id, pack_id=args.get("pack"), amount=args.get("credits")
    )
    session.commit()  # keeps the Stripe customer id created on first use
    return _checkout_json(started)


@blueprint.post("/subscribe")
@document(
    "Start a Stripe Checkout for a plan subscription.",
    description="The plan changes when Stripe reports the subscription (webhook). 422 for "
    "the free plan or an unknown one; 409 when a subscription is already live (change it "
    "in the portal).",
    body=schemas.SubscribeSchema,
    responses={200: schemas.CheckoutSchema},
    errors=(409, 503),
)
@authenticated
def subscribe(caller: Caller):
    args = load_json(schemas.SubscribeSchema)
    session = db_session()
    started = billing.start_subscription_checkout(
        session, _settings(), caller.user_id, args["plan"]
    )
    session.commit()
    return _checkout_json(started)


@blueprint.post("/portal")
@document(
    "A Stripe Customer Portal link (change or cancel the plan, invoices, cards).",
    description="409 `conflict` when the caller has never been to Checkout.",
    responses={200: schemas.PortalSchema},
    errors=(409, 503),
)
@authenticated
def portal(caller: Caller):
    return {"url": billing.open_portal(db_session(), _settings(), caller.user_id)}


@blueprint.post("/fulfill")
@document(
    "Fulfil a credit-pack Checkout Session (the success page calls this).",
    description="Asks Stripe about the session and grants its credits if it is paid; "
    "at most once together with the webhook. Someone else's session is 404.",
    body=schemas.FulfillSchema,
    responses={200: schemas.FulfillResultSchema},
    errors=(404, 503),
)
@authenticated
def fulfill(caller: Caller):
    args = load_json(schemas.FulfillSchema)
    session = db_session()
    outcome = billing.fulfil_checkout(session, _settings(), caller.user_id, args["session_id"])
    session.commit()
    purchase = outcome.purchase
    return {
        "session_id": outcome.session_id,
        "status": outcome.status,
        "purchase": schemas.purchase_json(purchase) if purchase is not None else None,
    }


@blueprint.get("/history")
@document(
    "The caller's credit purchases, newest first, cursor-paginated.",
    query=PageQuerySchema,
    responses={200: schemas.PurchasePageSchema},
)
@authenticated
def history(caller: Caller):
    args = load_query(PageQuerySchema)
    rows, next_cursor = billing.list_purchases(
        db_session(), caller.user_id, limit=args["limit"], cursor=args["cursor"]
    )
    return {"items": [schemas.purchase_json(row) for row in rows], "next_cursor": next_cursor}


@blueprint.post("/webhook")
@document(
    "Stripe events (signed with Stripe-Signature).",
    description="The signature is checked over the raw body (5-minute tolerance); a bad or "
    "missing signature, an old timestamp or a body that is not an event is 400 and changes "
    "nothing. Each event id is applied once; unknown types are acknowledged and ignored. "
    "Handled: " + ", ".join(events.EVENT_TYPES) + ".",
    raw_body={
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    headers=("Stripe-Signature",),
    responses={200: schemas.WebhookAckSchema},
    errors=(400, 503),
)
def webhook():
    payload = request.get_data(cache=False)
    try:
        event = events.verify(_settings(), payload, request.headers.get("Stripe-Signature"))
    except events.InvalidWebhook as exc:
        raise ApiError(400, exc.code, exc.message) from None
    session = db_session()
    events.process(session, event)
    session.commit()  # the event id and its effects, in one transaction
    return {"received": True}

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from api.schemas import iso, page_schema


class PlanSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    monthly_credits = fields.Integer(required=True)
    price_cents = fields.Integer(required=True)
    currency = fields.String(required=True)
    features = fields.List(fields.String(), required=True)
    max_concurrent_tasks = fields.Integer(required=True)


class CreditPackSchema(Schema):
    id = fields.String(required=True)
    credits = fields.Integer(required=True)
    price_cents = fields.Integer(required=True)
    currency = fields.String(required=True)


class PlansSchema(Schema):
    plans = fields.List(fields.Nested(PlanSchema), required=True)
    credit_packs = fields.List(fields.Nested(CreditPackSchema), required=True)


def plan_json(plan) -> dict:
    return {
        "id": plan.id,
        "name": plan.name,
        "monthly_credits": plan.monthly_credits,
        "price_cents": plan.price_cents,
        "currency": plan.currency,
        "features": list(plan.features or []),
        "max_concurrent_tasks": plan.max_concurrent_tasks,
    }


def pack_json(pack) -> dict:
    return {
        "id": pack.id,
        "credits": pack.credits,
        "price_cents": pack.price_cents,
        "currency": pack.currency,
    }


class PurchaseCreditsSchema(Schema):
    """`{"pack": "<pack id>"}` or `{"credits": n}` (n one of the pack sizes)."""

    class Meta:
        unknown = RAISE

    pack = fields.String(validate=validate.Length(min=1, max=64))
    credits = fields.Integer(strict=True)

    @validates_schema
    def _one_of(self, data, **_kwargs):
        if ("pack" in data) == ("credits" in data):
            raise ValidationError("Send exactly one of 'pack' or 'credits'.", "_schema")


class SubscribeSchema(Schema):
    class Meta:
        unknown = RAISE

    plan = fields.String(required=True, validate=validate.Length(min=1, max=32))


class FulfillSchema(Schema):
    class Meta:
        unknown = RAISE

    session_id = fields.String(required=True, validate=validate.Regexp(r"^cs_[A-Za-z0-9_]{1,250}$"))


class CheckoutSchema(Schema):
    checkout_url = fields.String(required=True)
    session_id = fields.String(required=True)


class PortalSchema(Schema):
    url = fields.String(required=True)


class PurchaseSchema(Schema):
    id = fields.UUID(required=True)
    session_id = fields.String(required=True)
    pack = fields.String(allow_none=True)
    credits = fields.Integer(required=True)
    amount_cents = fields.Integer(required=True)
    currency = fields.String(required=True)
    status = fields.String(
        required=True,
        metadata={"description": "pending | paid | failed | partially_refunded | refunded"},
    )
    refunded_credits = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


PurchasePageSchema = page_schema(PurchaseSchema, "PurchasePage")


class FulfillResultSchema(Schema):
    session_id = fields.String(required=True)
    status = fields.String(
        required=True,
        metadata={"description": "paid (credits granted) | pending | failed | open | expired"},
    )
    purchase = fields.Nested(PurchaseSchema, allow_none=True, required=True)


class WebhookAckSchema(Schema):
    received = fields.Boolean(required=True)


def purchase_json(purchase) -> dict:
    return {
        "id": str(purchase.id),
        "session_id": purchase.stripe_checkout_session_id,
        "pack": purchase.pack_id,
        "credits": purchase.credits,
        "amount_cents": purchase.amount_cents,
        "currency": purchase.currency,
        "status": purchase.status,
        "refunded_credits": purchase.refunded_credits,
        "created_at": iso(purchase.created_at),
    }

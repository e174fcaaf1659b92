from __future__ import annotations

from marshmallow import Schema, fields


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

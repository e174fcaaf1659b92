from __future__ import annotations

from marshmallow import Schema, fields

from api.schemas import iso, page_schema


class CreditsSchema(Schema):
    total = fields.Integer(required=True)
    plan_credits = fields.Integer(required=True)
    purchased_credits = fields.Integer(required=True)
    plan = fields.String(required=True)
    monthly_credits = fields.Integer(required=True)
    next_reset_at = fields.DateTime(required=True)


class UserCreditsSchema(Schema):
    total = fields.Integer(required=True)
    plan_credits = fields.Integer(required=True)
    purchased_credits = fields.Integer(required=True)
    next_reset_at = fields.DateTime(required=True)


class UserSchema(Schema):
    id = fields.UUID(required=True)
    clerk_id = fields.String(required=True)
    email = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    plan = fields.String(required=True)
    credits = fields.Nested(UserCreditsSchema, required=True)
    created_at = fields.DateTime(required=True)


class LedgerEntrySchema(Schema):
    id = fields.Integer(required=True)
    delta = fields.Integer(required=True)
    bucket = fields.String(required=True)
    reason = fields.String(required=True)
    task_id = fields.UUID(allow_none=True)
    balance_after = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


LedgerPageSchema = page_schema(LedgerEntrySchema, "LedgerPage")


class WebhookSecretSchema(Schema):
    secret = fields.String(required=True)
    scheme = fields.String(required=True)


def user_json(user) -> dict:
    return {
        "id": str(user.id),
        "clerk_id": user.clerk_id,
        "email": user.email,
        "name": user.name,
        "plan": user.plan_id,
        "credits": {
            "total": user.total_credits,
            "plan_credits": user.plan_credits,
            "purchased_credits": user.purchased_credits,
            "next_reset_at": iso(user.credits_reset_at),
        },
        "created_at": iso(user.created_at),
    }


def credits_json(user) -> dict:
    return {
        "total": user.total_credits,
        "plan_credits": user.plan_credits,
        "purchased_credits": user.purchased_credits,
        "plan": user.plan_id,
        "monthly_credits": user.plan.monthly_credits,
        "next_reset_at": iso(user.credits_reset_at),
    }


def ledger_json(row) -> dict:
    return {
        "id": row.id,
        "delta": row.delta,
        "bucket": row.bucket,
        "reason": row.reason,
        "task_id": str(row.task_id) if row.task_id else None,
        "balance_after": row.balance_after,
        "created_at": iso(row.created_at),
    }

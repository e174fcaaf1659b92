"""Plans and credit purchases."""

from __future__ import annotations

from flask import Blueprint

from api.billing import schemas
from api.db import db_session
from api.openapi import document
from shared.accounts.plans import list_plans
from shared.billing.packs import CREDIT_PACKS

blueprint = Blueprint("billing", __name__, url_prefix="/api/billing")


@blueprint.get("/plans")
@document("The plans and the credit packs for sale.", responses={200: schemas.PlansSchema})
def plans():
    return {
        "plans": [schemas.plan_json(plan) for plan in list_plans(db_session())],
        "credit_packs": [schemas.pack_json(pack) for pack in CREDIT_PACKS],
    }

"""The caller's account: profile, balance, ledger, webhook secret."""

from __future__ import annotations

from flask import Blueprint

from api.auth import Caller, authenticate, authenticated
from api.db import db_session
from api.openapi import document
from api.schemas import PageQuerySchema, load_query
from api.users import schemas
from shared.accounts import service as accounts
from shared.credits import service as credits
from shared.errors import ValidationFailed

blueprint = Blueprint("users", __name__, url_prefix="/api/users")


@blueprint.get("/me")
@document("The caller's profile.", responses={200: schemas.UserSchema})
@authenticated
def me(caller: Caller):
    return schemas.user_json(accounts.get_user(db_session(), caller.user_id))


@blueprint.post("/initialize")
@document(
    "Create the caller's account on sign-up (idempotent): 201 the first time, then 200.",
    responses={201: schemas.UserSchema, 200: schemas.UserSchema},
)
def initialize():
    caller, created, identity = authenticate()
    session = db_session()
    if identity is not None and not created:
        accounts.update_profile(session, caller.user_id, identity.email, identity.name)
    session.commit()
    return schemas.user_json(accounts.get_user(session, caller.user_id)), 201 if created else 200


initialize._auth_required = True  # documented as authenticated; it authenticates itself


@blueprint.get("/credits")
@document("The caller's balance.", responses={200: schemas.CreditsSchema})
@authenticated
def credits_balance(caller: Caller):
    return schemas.credits_json(accounts.get_user(db_session(), caller.user_id))


@blueprint.get("/transactions")
@document(
    "The caller's credit ledger, newest first, cursor-paginated.",
    query=PageQuerySchema,
    responses={200: schemas.LedgerPageSchema},
)
@authenticated
def transactions(caller: Caller):
    args = load_query(PageQuerySchema)
    before_id = None
    if args["cursor"]:
        if not args["cursor"].isdigit():
            raise ValidationFailed("Invalid cursor.", {"cursor": ["Not a cursor we issued."]})
        before_id = int(args["cursor"])
    rows, next_id = credits.list_ledger(
        db_session(), caller.user_id, limit=args["limit"], before_id=before_id
    )
    return {
        "items": [schemas.ledger_json(row) for row in rows],
        "next_cursor": str(next_id) if next_id is not None else None,
    }


@blueprint.get("/webhook-secret")
@document(
    "The secret that signs the caller's task webhooks (Standard Webhooks).",
    responses={200: schemas.WebhookSecretSchema},
)
@authenticated
def webhook_secret(caller: Caller):
    session = db_session()
    secret = accounts.webhook_secret(session, caller.user_id)
    session.commit()
    return {"secret": secret, "scheme": "standard-webhooks-v1"}

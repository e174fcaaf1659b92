"""API keys: create (the secret is shown once), list, revoke; and resolving a key sent as
`Authorization: Bearer sx_live_...` to its owner (installed as the app's api_key_resolver)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from flask import Blueprint

from api.auth import Caller, authenticated, unauthorized
from api.db import db_session
from api.errors import ApiError
from api.openapi import document
from api.schemas import load_json
from api.users import api_key_schemas as schemas
from shared.accounts import api_keys

blueprint = Blueprint("api_keys", __name__, url_prefix="/api/users")


@dataclass(frozen=True)
class ApiKeyCaller(Caller):
    """A caller authenticated by an API key rather than a signed-in session."""

    api_key_id: uuid.UUID


def resolve_api_key(session, token: str) -> Caller:
    """The caller behind an API key; unknown or revoked keys are 401.

    No cache: every request reads the key's row, so a revoked key fails at once.
    """
    owner = api_keys.resolve_key(session, token)
    if owner is None:
        raise unauthorized("Invalid or revoked API key.")
    if owner.touched:
        session.commit()  # keep last_used_at even if the view then fails or only reads
    return ApiKeyCaller(owner.user_id, owner.clerk_id, owner.key_id)


@blueprint.post("/api-keys")
@document(
    "Create an API key; the secret (`key`) is in this response only.",
    description="Needs a signed-in session: an API key cannot mint more keys, so a leaked "
    "key cannot outlive its revocation. At most 25 keys per user (409).",
    body=schemas.CreateApiKeySchema,
    responses={201: schemas.CreatedApiKeySchema},
    errors=(403, 409),
)
@authenticated
def create_api_key(caller: Caller):
    if isinstance(caller, ApiKeyCaller):
        raise ApiError(403, "forbidden", "Create API keys while signed in, not with an API key.")
    body = load_json(schemas.CreateApiKeySchema)
    session = db_session()
    created = api_keys.create_key(session, caller.user_id, body["name"])
    session.commit()
    return schemas.created_key_json(created), 201


@blueprint.get("/api-keys")
@document("The caller's API keys (never their secrets).", responses={200: schemas.ApiKeyListSchema})
@authenticated
def list_api_keys(caller: Caller):
    keys = api_keys.list_keys(db_session(), caller.user_id)
    return {"items": [schemas.api_key_json(key) for key in keys]}


@blueprint.delete("/api-keys/<key_id>")
@document(
    "Revoke an API key; it is refused from the next request on.",
    responses={204: None},
    errors=(404,),
)
@authenticated
def revoke_api_key(caller: Caller, key_id: str):
    session = db_session()
    api_keys.revoke_key(session, caller.user_id, key_id)
    session.commit()
    return "", 204

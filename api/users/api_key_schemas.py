"""Schemas of the API-key endpoints (`api/users/api_keys.py`)."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from api.schemas import iso
from shared.accounts.api_keys import NAME_MAX


class CreateApiKeySchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=NAME_MAX))


class ApiKeySchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    prefix = fields.String(required=True, metadata={"description": "The key's first characters."})
    created_at = fields.DateTime(required=True)
    last_used_at = fields.DateTime(
        allow_none=True,
        required=True,
        metadata={"description": "Refreshed at most once a minute."},
    )


class CreatedApiKeySchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    prefix = fields.String(required=True)
    key = fields.String(required=True, metadata={"description": "The secret; shown only now."})
    created_at = fields.DateTime(required=True)


class ApiKeyListSchema(Schema):
    items = fields.List(fields.Nested(ApiKeySchema), required=True)


def api_key_json(key) -> dict:
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }


def created_key_json(created) -> dict:
    key = created.key
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "key": created.secret,
        "created_at": iso(key.created_at),
    }

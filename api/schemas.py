"""Schemas shared by several blueprints: errors, pagination, request parsing."""

from __future__ import annotations

from flask import request
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from shared.base import iso
from shared.errors import ValidationFailed


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict()


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


class PageQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(load_default=None, validate=validate.Length(max=500))


def load_json(schema: Schema, *, allow_empty: bool = False) -> dict:
    """Parse the JSON body with `schema`; bad JSON or content type is a clear 4xx."""
    from api.errors import ApiError

    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            data = {}
        else:
            raise ApiError(400, "bad_request", "A JSON body is required.")
    else:
        if not request.is_json:
            raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
        data = request.get_json(silent=True)
        if data is None:
            raise ApiError(400, "bad_request", "The body is not valid JSON.")
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "The body must be a JSON object.",
                       {"body": ["Must be an object."]})
    return load(schema, data)


def load_query(schema: Schema) -> dict:
    return load(schema, request.args.to_dict())


def load(schema: Schema, data: dict) -> dict:
    try:
        return schema.load(data)
    except ValidationError as err:
        raise ValidationFailed("The request is not valid.", err.messages) from None


__all__ = ["RAISE", "ErrorSchema", "PageQuerySchema", "iso", "load", "load_json", "load_query"]

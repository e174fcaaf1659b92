"""Schemas shared by several blueprints: errors, pagination, request parsing."""

from __future__ import annotations

from flask import request
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from api.errors import ApiError
from shared.base import iso
from shared.errors import ValidationFailed
from shared.validation import schema_instance


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict()


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


def page_schema(item_schema: type[Schema], name: str) -> type[Schema]:
    """The API.md list shape, `{"items": [...], "next_cursor": "<opaque>" | null}`."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "next_cursor": fields.String(allow_none=True, required=True),
        },
        name=name,
    )


class PageQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(load_default=None, validate=validate.Length(max=500))


# No request of this API nests deeper than a handful of levels. A deeper body is refused
# before anything walks it: Python's parser (and every recursive walk after it) fails
# with RecursionError at about 1,000 levels, and a body of nothing but brackets is cheap
# to send.
MAX_JSON_DEPTH = 32


def _nested_deeper_than(value, limit: int) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _too_deep() -> ApiError:
    return ApiError(
        400, "bad_request", f"The body is nested more than {MAX_JSON_DEPTH} levels deep."
    )


def load_json(schema: type[Schema], *, allow_empty: bool = False) -> dict:
    """Parse the JSON body with `schema`; bad JSON or content type is a clear 4xx."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            data = {}
        else:
            raise ApiError(400, "bad_request", "A JSON body is required.")
    else:
        if not request.is_json:
            raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
        try:
            data = request.get_json(silent=True)
        except RecursionError:
            raise _too_deep() from None
        if data is None:
            raise ApiError(400, "bad_request", "The body is not valid JSON.")
        if _nested_deeper_than(data, MAX_JSON_DEPTH):
            raise _too_deep()
    if not isinstance(data, dict):
        raise ApiError(
            422,
            "validation_error",
            "The body must be a JSON object.",
            {"body": ["Must be an object."]},
        )
    return load(schema, data)


def load_query(schema: type[Schema]) -> dict:
    return load(schema, request.args.to_dict())


def _nul_fields(value, path: str = "") -> list[str]:
    """Where NUL characters hide in parsed JSON (keys too): PostgreSQL text and jsonb
    cannot store them, so they would fail as a DataError (a 500) deep in a service."""
    if isinstance(value, str):
        return [path or "body"] if "\x00" in value else []
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found += [where] if "\x00" in str(key) else _nul_fields(item, where)
        return found
    if isinstance(value, list):
        return [f for i, item in enumerate(value) for f in _nul_fields(item, f"{path}.{i}")]
    return []


def load(schema: type[Schema], data: dict) -> dict:
    nul = _nul_fields(data)
    if nul:
        raise ValidationFailed(
            "The request is not valid.",
            {f: ["Must not contain NUL (\\u0000) characters."] for f in nul},
        )
    try:
        return schema_instance(schema).load(data)
    except ValidationError as err:
        raise ValidationFailed("The request is not valid.", err.messages) from None


__all__ = ["RAISE", "ErrorSchema", "PageQuerySchema", "iso", "load", "load_json", "load_query"]

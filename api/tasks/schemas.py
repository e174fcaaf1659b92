from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from api.schemas import PageQuerySchema, page_schema
from shared.tasks.models import STATUSES
from shared.tasks.service import WEBHOOK_EVENTS


class CreateTaskSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    input = fields.Dict(required=True)
    webhook_url = fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=2048),
    )
    webhook_events = fields.List(
        fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)),
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=len(WEBHOOK_EVENTS)),
    )


class TaskListQuerySchema(PageQuerySchema):
    status = fields.String(load_default=None, validate=validate.OneOf(STATUSES))
    type = fields.String(load_default=None, validate=validate.Length(max=64))


class TaskErrorSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)


class ArtifactSchema(Schema):
    name = fields.String(required=True)
    content_type = fields.String(required=True)
    size = fields.Integer(required=True)
    url = fields.String(required=True)
    sha256 = fields.String()


class TaskSchema(Schema):
    id = fields.UUID(required=True)
    type = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    input = fields.Dict(required=True)
    output = fields.Dict(allow_none=True, required=True)
    error = fields.Nested(TaskErrorSchema, allow_none=True, required=True)
    progress = fields.Float(required=True)
    cost = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    started_at = fields.DateTime(allow_none=True, required=True)
    completed_at = fields.DateTime(allow_none=True, required=True)
    artifacts = fields.List(fields.Nested(ArtifactSchema), required=True)
    cancel_requested = fields.Boolean()


TaskPageSchema = page_schema(TaskSchema, "TaskPage")


class TaskTypeSchema(Schema):
    type = fields.String(required=True)
    cost = fields.Integer(required=True)
    description = fields.String(required=True)
    input_schema = fields.Dict(required=True)
    time_limit_s = fields.Integer(required=True)


class TaskTypesSchema(Schema):
    items = fields.List(fields.Nested(TaskTypeSchema), required=True)

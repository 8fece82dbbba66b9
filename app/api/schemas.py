"""marshmallow schemas: the request and response contract, and the OpenAPI source."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class DurationField(fields.String):
    """`"5"`; a bare integer 5 is accepted too and read as `"5"`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        result = super()._deserialize(value, attr, data, **kwargs)
        if not result.isdigit():
            raise ValidationError("Must be a whole number of seconds, e.g. \"5\".")
        return result


class ApiErrorSchema(Schema):
    """Every error answer: a code (or, for 404s, a short sentence), optional per-field
    details, and optionally a sentence for people."""

    error = fields.String(required=True)
    details = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    message = fields.String()


class LoginSchema(StrictSchema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))


class AccountSchema(Schema):
    email = fields.String(required=True)
    credits = fields.Integer(required=True)


class VideoRequestSchema(StrictSchema):
    templateSlug = fields.String(required=True, validate=validate.Length(min=1, max=64))
    startKey = fields.String(required=True, validate=validate.Length(min=1, max=512))
    duration = DurationField(load_default="5", validate=validate.Length(min=1, max=4),
                             metadata={"oneOf": [
                                 {"type": "string", "pattern": "^[0-9]{1,4}$"},
                                 {"type": "integer", "minimum": 0, "maximum": 9999}]})
    variables = fields.Dict(keys=fields.String(validate=validate.Length(max=64)),
                            values=fields.Raw(allow_none=True), load_default=dict)
    webhookUrl = fields.String(
        validate=validate.Length(min=1, max=2048),
        metadata={"description": "http(s) URL told about this job's events instead of the "
                                 "account's webhook endpoint (signed with the same secret)"})
    webhookEvents = fields.List(
        fields.String(validate=validate.OneOf(["processing", "completed", "failed"])),
        validate=validate.Length(max=3),
        metadata={"description": "events to send; default [\"completed\", \"failed\"]"})


class VideoStartedSchema(Schema):
    jobId = fields.String(required=True)
    status = fields.String(required=True)
    credits = fields.Integer(required=True)
    message = fields.String(required=True)


class JobIdBodySchema(StrictSchema):
    jobId = fields.String(required=True, validate=validate.Length(min=1, max=64))


class JobStatusSchema(Schema):
    status = fields.String(required=True,
                           validate=validate.OneOf(["pending", "processing", "completed",
                                                    "failed"]))
    message = fields.String()
    url = fields.String()
    key = fields.String()
    credits = fields.Integer()
    error = fields.String()
    refunded = fields.Boolean()
    jobId = fields.String()
    phase = fields.String()
    queuePosition = fields.Integer()
    progress = fields.String()
    createdAt = fields.String()
    completedAt = fields.String()


class JobListQuerySchema(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(load_default=None, metadata={
        "description": "`nextCursor` of the previous page; any other value is a 400."})


class JobListItemSchema(Schema):
    jobId = fields.String()
    status = fields.String()
    templateSlug = fields.String()
    duration = fields.String()
    credits = fields.Integer()
    createdAt = fields.String()


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobListItemSchema))
    nextCursor = fields.String(allow_none=True)


class TemplateVariableSchema(Schema):
    name = fields.String()
    required = fields.Boolean()
    default = fields.String(allow_none=True)
    choices = fields.List(fields.String(), allow_none=True)
    max_length = fields.Integer(allow_none=True)


class TemplateSchema(Schema):
    slug = fields.String()
    name = fields.String()
    durations = fields.Dict(keys=fields.String(), values=fields.Integer())
    variables = fields.List(fields.Nested(TemplateVariableSchema))


class TemplateListSchema(Schema):
    templates = fields.List(fields.Nested(TemplateSchema))


class LibraryItemSchema(Schema):
    key = fields.String()
    kind = fields.String()
    contentType = fields.String()
    size = fields.Integer()
    createdAt = fields.String()
    url = fields.String()
    jobId = fields.String()


class LibraryListSchema(Schema):
    items = fields.List(fields.Nested(LibraryItemSchema))


class LibraryKeyQuerySchema(Schema):
    key = fields.String(required=True, validate=validate.Length(min=1))


class UploadSchema(Schema):
    file = fields.Raw(metadata={"type": "string", "format": "binary"})


class CreatedKeySchema(Schema):
    key = fields.String(required=True)


class WebhookUrlSchema(StrictSchema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=2048),
                        metadata={"format": "uri", "pattern": "^https?://"})


class WebhookEndpointSchema(Schema):
    url = fields.String(required=True)
    secret = fields.String(metadata={"description": "whsec_ + base64; shown on PUT and rotate"})


class WebhookDeliverySchema(Schema):
    id = fields.String()
    type = fields.String()
    url = fields.String()
    attempts = fields.Integer()
    state = fields.String(validate=validate.OneOf(["pending", "delivered", "failed"]))
    lastStatus = fields.Integer(allow_none=True)
    lastError = fields.String(allow_none=True)
    lastAttemptAt = fields.String(allow_none=True)
    nextAttemptAt = fields.String(allow_none=True)


class WebhookDeliveryListSchema(Schema):
    deliveries = fields.List(fields.Nested(WebhookDeliverySchema))


class JobIdQuerySchema(Schema):
    jobId = fields.String(required=True)

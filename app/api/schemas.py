"""marshmallow schemas: the request and response contract, and the OpenAPI source."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from app import jobs
from app.jobs import Status


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
        fields.String(validate=validate.OneOf(list(jobs.EVENTS))),
        validate=validate.Length(max=3),
        metadata={"description": "events to send; default [\"completed\", \"failed\"]"})


class VideoStartedSchema(Schema):
    jobId = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([Status.PENDING.value]))
    credits = fields.Integer(required=True, metadata={"description": "what the job cost"})
    message = fields.String(required=True)


class JobIdBodySchema(StrictSchema):
    jobId = fields.String(required=True, validate=validate.Length(min=1, max=64))


_STATUSES = [s.value for s in Status]
_PHASE = ("where the job is inside its status: queued, submitting, awaiting_callback, "
          "in_queue, in_progress or finalizing")
_ISO = {"format": "date-time"}


class JobStatusSchema(Schema):
    """`GET .../status` and `POST .../cancel` (docs/api.md §4). Field order is the order
    the body has always had (key order follows declaration order)."""

    status = fields.String(required=True, validate=validate.OneOf(_STATUSES))
    message = fields.String(metadata={"description": "pending and processing: exact texts"})
    url = fields.String(metadata={"description": "completed: a fresh download link for key"})
    key = fields.String(metadata={"description": "completed: the video's storage key"})
    error = fields.String(metadata={"description": "failed: why (`Cancelled`, `Timed out`, ...)"})
    refunded = fields.Boolean(metadata={"description": "failed: the credits came back"})
    credits = fields.Integer(metadata={"description": "completed and failed: what it cost"})
    completedAt = fields.String(allow_none=True, metadata={**_ISO, "description":
                                                           "completed and failed"})
    jobId = fields.String(required=True)
    createdAt = fields.String(required=True, allow_none=True, metadata=_ISO)
    phase = fields.String(metadata={"description": _PHASE})
    queuePosition = fields.Integer(metadata={"description": "processing, while fal queues it"})
    progress = fields.String(metadata={"description": "processing"})


class JobListQuerySchema(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(load_default=None, metadata={
        "description": "`nextCursor` of the previous page; any other value is a 400."})


class JobListItemSchema(Schema):
    jobId = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(_STATUSES))
    templateSlug = fields.String(required=True)
    duration = fields.String(required=True)
    credits = fields.Integer(required=True)
    createdAt = fields.String(required=True, allow_none=True, metadata=_ISO)
    startKey = fields.String()
    error = fields.String(metadata={"description": "failed only"})
    refunded = fields.Boolean(metadata={"description": "failed only"})
    key = fields.String(metadata={"description": "completed only"})
    completedAt = fields.String(allow_none=True, metadata={**_ISO, "description":
                                                           "failed and completed"})
    phase = fields.String(metadata={"description": "pending and processing: " + _PHASE})


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobListItemSchema), required=True)
    nextCursor = fields.String(required=True, allow_none=True,
                               metadata={"description": "null on the last page"})


class TemplateVariableSchema(Schema):
    name = fields.String(required=True)
    required = fields.Boolean(required=True)
    default = fields.String(required=True, allow_none=True)
    choices = fields.List(fields.String(), required=True, allow_none=True)
    max_length = fields.Integer(required=True, allow_none=True)


class TemplateSchema(Schema):
    slug = fields.String(required=True)
    name = fields.String(required=True)
    durations = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                            metadata={"description": "duration in seconds → credit cost"})
    variables = fields.List(fields.Nested(TemplateVariableSchema), required=True)


class TemplateListSchema(Schema):
    templates = fields.List(fields.Nested(TemplateSchema), required=True)


class LibraryItemSchema(Schema):
    key = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["image", "video"]))
    contentType = fields.String(required=True)
    size = fields.Integer(required=True)
    createdAt = fields.String(required=True, allow_none=True, metadata=_ISO)
    url = fields.String(required=True, metadata={"description": "a fresh download link"})
    jobId = fields.String(metadata={"description": "videos: the job that made it"})
    posterUrl = fields.String(metadata={"description": "videos: a link to its first frame"})
    templateSlug = fields.String()
    templateName = fields.String()
    duration = fields.String()
    startKey = fields.String()


class LibraryListSchema(Schema):
    items = fields.List(fields.Nested(LibraryItemSchema), required=True)


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
    id = fields.String(required=True)
    type = fields.String(required=True, metadata={
        "description": "video.processing, video.completed or video.failed"})
    url = fields.String(required=True)
    attempts = fields.Integer(required=True)
    state = fields.String(required=True,
                          validate=validate.OneOf(["pending", "delivered", "failed"]))
    lastStatus = fields.Integer(required=True, allow_none=True)
    lastError = fields.String(required=True, allow_none=True)
    lastAttemptAt = fields.String(required=True, allow_none=True, metadata=_ISO)
    nextAttemptAt = fields.String(required=True, allow_none=True, metadata=_ISO)


class WebhookDeliveryListSchema(Schema):
    deliveries = fields.List(fields.Nested(WebhookDeliverySchema), required=True)


class JobIdQuerySchema(Schema):
    jobId = fields.String(required=True)

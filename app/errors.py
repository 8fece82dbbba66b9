"""Errors that carry an HTTP meaning but no Flask: domain code raises, the API renders."""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    """`{"error": error, "details"?: details}` with `status`; rendered in app/api/errors.py."""

    def __init__(self, status: int, error: str, details: Mapping[str, list[str]] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = dict(details) if details else None
        self.headers = dict(headers or {})


def validation_error(details: Mapping[str, list[str]]) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", details)

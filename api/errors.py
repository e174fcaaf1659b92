"""One error handler for the whole app: every error has the API.md shape.

`{"error": {"code", "message", "details"?}}`, with the request id echoed in the
`X-Request-ID` header (and in `details.request_id` for 500s).
"""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from shared.errors import DomainError

log = logging.getLogger("studiox.api")

STATUS_OF_CODE = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "validation_error": 422,
    "insufficient_credits": 402,
    "conflict": 409,
    "rate_limited": 429,
    "billing_not_configured": 503,
    "service_unavailable": 503,
    "internal_error": 500,
}

# Protocol errors werkzeug raises before a view runs.
CODE_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error raised by the HTTP layer itself (auth, request parsing)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers or {}


def error_response(
    status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None
):
    body = {"code": code, "message": message}
    if details:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError):
        status = STATUS_OF_CODE.get(exc.code, 400)
        headers = {"Retry-After": "5"} if status == 429 else None
        return error_response(status, exc.code, exc.message, exc.details, headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = CODE_OF_STATUS.get(status, "bad_request" if status < 500 else "internal_error")
        headers = {}
        if status == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        message = exc.description or exc.name
        if status == 404:
            message = "No such resource."
        return error_response(status, code, message, None, headers)

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _database_down(exc):
        log.warning("database unavailable: %s", str(exc).splitlines()[0][:300])
        return error_response(
            503,
            "service_unavailable",
            "The database is unavailable; try again shortly.",
            {"dependency": "database"},
            {"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return _database_down(exc)
        request_id = getattr(g, "request_id", None)
        log.exception("unhandled error (request_id=%s)", request_id)
        return error_response(
            500,
            "internal_error",
            "Something went wrong on our side.",
            {"request_id": request_id},
        )

"""Typed exceptions, one per API error code (API.md, "Errors").

Catch `StudioXError` for everything this package raises, `APIError` for any error answer
from the server, or a subclass for one case:

    try:
        client.tasks.create("video_generation", {...})
    except InsufficientCredits as exc:
        print(f"needs {exc.required}, has {exc.available}")
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx


class StudioXError(Exception):
    """Base of every error this package raises."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigurationError(StudioXError):
    """The client is missing something it needs (a base URL, an API key)."""


class APIConnectionError(StudioXError):
    """The server could not be reached, or the connection broke before an answer."""


class APIError(StudioXError):
    """The server answered with an error. `code` is the API's snake_case error code."""

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        headers: httpx.Headers | None = None,
    ):
        super().__init__(message)
        self.status = status
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id
        self.headers = headers if headers is not None else httpx.Headers()

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class BadRequest(APIError):
    code = "bad_request"


class Unauthorized(APIError):
    code = "unauthorized"


class Forbidden(APIError):
    code = "forbidden"


class NotFound(APIError):
    code = "not_found"


class MethodNotAllowed(APIError):
    code = "method_not_allowed"


class Conflict(APIError):
    code = "conflict"


class ArtifactExpired(APIError):
    """The file was deleted after the server's retention period (HTTP 410)."""

    code = "artifact_expired"


class PayloadTooLarge(APIError):
    code = "payload_too_large"


class UnsupportedMediaType(APIError):
    code = "unsupported_media_type"


class ValidationError(APIError):
    """The request was rejected; `details` names the fields (e.g. {"input": {"steps": [...]}})."""

    code = "validation_error"


class InsufficientCredits(APIError):
    code = "insufficient_credits"

    @property
    def required(self) -> int | None:
        return self.details.get("required")

    @property
    def available(self) -> int | None:
        return self.details.get("available")


class _RetryAfter(APIError):
    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked us to wait (`Retry-After`), if it said."""
        return parse_retry_after(self.headers.get("Retry-After"))


class RateLimited(_RetryAfter):
    """Too many requests, or the plan's limit of tasks running at once is reached."""

    code = "rate_limited"


class ServiceUnavailable(_RetryAfter):
    code = "service_unavailable"


class BillingNotConfigured(ServiceUnavailable):
    code = "billing_not_configured"


class InternalError(APIError):
    """A bug on the server; `request_id` identifies it in the server's logs."""

    code = "internal_error"


class TaskFailed(StudioXError):
    """A task ended `failed` (or `canceled`, as TaskCanceled); `task` holds it."""

    def __init__(self, task):
        error = task.error
        reason = f"{error.code}: {error.message}" if error else task.status
        super().__init__(f"Task {task.id} ({task.type}) {task.status}: {reason}")
        self.task = task


class TaskCanceled(TaskFailed):
    pass


class WaitTimeout(StudioXError, TimeoutError):
    """The task had not ended when the wait ran out; `task` is its last known state."""

    def __init__(self, task, timeout: float):
        super().__init__(
            f"Task {task.id} is still {task.status} after {timeout:g} s; it keeps running."
        )
        self.task = task
        self.timeout = timeout


class WebhookVerificationError(StudioXError):
    """A webhook's signature or timestamp did not check out: do not trust its body."""


_BY_CODE: dict[str, type[APIError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        ArtifactExpired,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationError,
        InsufficientCredits,
        RateLimited,
        ServiceUnavailable,
        BillingNotConfigured,
        InternalError,
    )
}
# For answers without our error body (a proxy's 502 page, say).
_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: ArtifactExpired,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    402: InsufficientCredits,
    429: RateLimited,
    500: InternalError,
    503: ServiceUnavailable,
}


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: either a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> APIError:
    """The typed exception for an error answer, from its `{"error": {...}}` body."""
    code = message = None
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") if isinstance(error.get("message"), str) else None
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(response.status_code, APIError)
    if message is None:
        message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    request_id = response.headers.get("X-Request-ID") or details.get("request_id")
    return cls(
        message,
        status=response.status_code,
        code=code or cls.code,
        details=details,
        request_id=request_id,
        headers=response.headers,
    )

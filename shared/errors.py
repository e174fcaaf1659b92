"""Domain exceptions: what happened, in the domain's words.

The API maps each `code` to an HTTP status in one place (`api/errors.py`); workers and the
CLI read the same attributes.
"""

from __future__ import annotations

import uuid
from typing import Any


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    code = "not_found"


class ValidationFailed(DomainError):
    """Input a schema rejected; `details` names the fields."""

    code = "validation_error"


class InsufficientCredits(DomainError):
    code = "insufficient_credits"

    def __init__(self, required: int, available: int):
        super().__init__(
            f"This needs {required} credits and {available} are available.",
            {"required": required, "available": available},
        )
        self.required = required
        self.available = available


class Conflict(DomainError):
    code = "conflict"


class ConcurrencyLimitReached(DomainError):
    """The plan's limit of unfinished tasks is reached."""

    code = "rate_limited"


class BillingNotConfigured(DomainError):
    code = "billing_not_configured"

    def __init__(self, message: str = "Billing is not configured on this server."):
        super().__init__(message)


class ServiceUnavailable(DomainError):
    code = "service_unavailable"


def id_or_not_found(value: uuid.UUID | str, message: str) -> uuid.UUID:
    """A client-supplied id as a UUID; a malformed one names nothing, so it is NotFound."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(message) from None

"""The StudioX Python client: `Client`, typed models and errors, webhook verification.

See docs/client.md. The `studiox` command line is `studiox_client.cli`.
"""

from studiox_client.client import Client, __version__
from studiox_client.errors import (
    APIConnectionError,
    APIError,
    ArtifactExpired,
    BadRequest,
    BillingNotConfigured,
    ConfigurationError,
    Conflict,
    Forbidden,
    InsufficientCredits,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    StudioXError,
    TaskCanceled,
    TaskFailed,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
    WaitTimeout,
    WebhookVerificationError,
)
from studiox_client.models import ApiKey, Artifact, Credits, Task, TaskError, Transaction
from studiox_client.webhooks import verify_webhook

__all__ = [
    "APIConnectionError",
    "APIError",
    "ApiKey",
    "Artifact",
    "ArtifactExpired",
    "BadRequest",
    "BillingNotConfigured",
    "Client",
    "ConfigurationError",
    "Conflict",
    "Credits",
    "Forbidden",
    "InsufficientCredits",
    "InternalError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceUnavailable",
    "StudioXError",
    "Task",
    "TaskCanceled",
    "TaskError",
    "TaskFailed",
    "Transaction",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
    "WaitTimeout",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]

"""Settings read from the environment, in one place (12-factor).

`Settings.from_env()` is the only function that reads `os.environ`; everything else takes
a `Settings` object, so tests and tools can pass their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = PROJECT_ROOT / "var"


def normalise_database_url(url: str) -> str:
    """Accept the `postgres://` / `postgresql://` forms hosting platforms hand out.

    SQLAlchemy needs the driver spelled out; we use psycopg 3.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Every knob of StudioX. Defaults give the embedded developer setup."""

    database_url: str = f"sqlite:///{VAR_DIR / 'studiox.db'}"
    broker_url: str = f"filesystem://{VAR_DIR / 'broker'}"
    result_backend: str | None = None
    frontend_url: str = "http://localhost:5173"
    port: int = 3000
    environment: str = "development"
    log_level: str = "INFO"
    log_format: str = "text"

    auth_mode: str = "clerk"
    dev_jwt_secret: str = "dev-secret-change-me-please-32-bytes"
    clerk_secret_key: str | None = None
    clerk_issuer: str | None = None
    clerk_jwks_url: str | None = None
    clerk_jwt_key: str | None = None
    clerk_authorized_parties: tuple[str, ...] = ()

    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None

    storage_url: str = f"file://{VAR_DIR / 'artifacts'}"
    artifact_retention_days: int = 30
    max_body_bytes: int = 16 * 1024 * 1024
    image_max_bytes: int = 10 * 1024 * 1024
    image_max_pixels: int = 40_000_000
    image_fetch_timeout_s: float = 10.0
    fetch_allow_hosts: tuple[str, ...] = ()
    ai_providers: tuple[str, ...] = ()
    ai_http_base_url: str | None = None
    ai_http_api_key: str | None = None

    task_type_plugins: tuple[str, ...] = ()
    rate_limit: str = "600 per minute"
    rate_limit_storage_url: str | None = None
    sweep_interval_s: float = 30.0
    requeue_after_s: float = 300.0
    task_lease_s: int = 60
    webhook_timeout_s: float = 10.0

    db_pool_size: int = 10
    db_max_overflow: int = 10
    extra: dict = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def billing_configured(self) -> bool:
        return bool(self.stripe_secret_key)

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name: str, default):
            value = env.get(name)
            return default if value is None or value == "" else value

        broker = get("CELERY_BROKER_URL", None) or get("REDIS_URL", None) or defaults.broker_url
        return cls(
            database_url=normalise_database_url(get("DATABASE_URL", defaults.database_url)),
            broker_url=broker,
            result_backend=get("CELERY_RESULT_BACKEND", None),
            frontend_url=get("FRONTEND_URL", defaults.frontend_url),
            port=int(get("PORT", defaults.port)),
            environment=get("STUDIOX_ENV", defaults.environment),
            log_level=get("LOG_LEVEL", defaults.log_level).upper(),
            log_format=get("LOG_FORMAT", defaults.log_format),
            auth_mode=get("AUTH_MODE", defaults.auth_mode),
            dev_jwt_secret=get("DEV_JWT_SECRET", defaults.dev_jwt_secret),
            clerk_secret_key=get("CLERK_SECRET_KEY", None),
            clerk_issuer=get("CLERK_ISSUER", None),
            clerk_jwks_url=get("CLERK_JWKS_URL", None),
            clerk_jwt_key=get("CLERK_JWT_KEY", None),
            clerk_authorized_parties=_split(get("CLERK_AUTHORIZED_PARTIES", "")),
            stripe_secret_key=get("STRIPE_SECRET_KEY", None),
            stripe_webhook_secret=get("STRIPE_WEBHOOK_SECRET", None),
            stripe_api_base=get("STRIPE_API_BASE", None),
            storage_url=get("STORAGE_URL", defaults.storage_url),
            artifact_retention_days=int(
                get("ARTIFACT_RETENTION_DAYS", defaults.artifact_retention_days)
            ),
            max_body_bytes=int(get("MAX_BODY_BYTES", defaults.max_body_bytes)),
            image_max_bytes=int(get("IMAGE_MAX_BYTES", defaults.image_max_bytes)),
            image_max_pixels=int(get("IMAGE_MAX_PIXELS", defaults.image_max_pixels)),
            image_fetch_timeout_s=float(
                get("IMAGE_FETCH_TIMEOUT_S", defaults.image_fetch_timeout_s)
            ),
            fetch_allow_hosts=_split(get("FETCH_ALLOW_HOSTS", "")),
            ai_providers=_split(get("AI_PROVIDERS", "")),
            ai_http_base_url=get("AI_HTTP_BASE_URL", None),
            ai_http_api_key=get("AI_HTTP_API_KEY", None),
            task_type_plugins=_split(get("TASK_TYPE_PLUGINS", "")),
            rate_limit=get("RATE_LIMIT", defaults.rate_limit),
            rate_limit_storage_url=get("RATE_LIMIT_STORAGE_URL", None),
            sweep_interval_s=float(get("SWEEP_INTERVAL_S", defaults.sweep_interval_s)),
            requeue_after_s=float(get("REQUEUE_AFTER_S", defaults.requeue_after_s)),
            task_lease_s=int(get("TASK_LEASE_S", defaults.task_lease_s)),
            webhook_timeout_s=float(get("WEBHOOK_TIMEOUT_S", defaults.webhook_timeout_s)),
            db_pool_size=int(get("DB_POOL_SIZE", defaults.db_pool_size)),
            db_max_overflow=int(get("DB_MAX_OVERFLOW", defaults.db_max_overflow)),
        )


SETTING_NAMES = tuple(f.name for f in fields(Settings))

"""Settings read from the environment, in one place (12-factor).

`Settings.from_env()` is the only function that reads `os.environ`; everything else takes
a `Settings` object, so tests and tools can pass their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
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


# The built-in DEV_JWT_SECRET: anyone can read it here, so it is only accepted in the
# development environment (`make run` generates a real one under var/).
DEV_JWT_SECRET_DEFAULT = "dev-secret-change-me-please-32-bytes"


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
    dev_jwt_secret: str = DEV_JWT_SECRET_DEFAULT
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
    ai_http_timeout_s: float = 60.0
    ai_http_max_retries: int = 3
    ai_http_backoff_s: float = 1.0
    s3_endpoint_url: str | None = None

    task_type_plugins: tuple[str, ...] = ()
    rate_limit: str = "600 per minute"
    rate_limit_storage_url: str | None = None
    rate_limit_ip: str = "1200 per minute"
    # Who may read GET /metrics: a bearer token, and/or client addresses (CIDRs).
    metrics_token: str | None = None
    metrics_allow: tuple[str, ...] = ()
    # Reverse proxies in front of the API whose X-Forwarded-For we trust (0 = none).
    trusted_proxy_count: int = 0
    # Where the embedded defaults (SQLite file, filesystem broker, artifacts) live.
    var_dir: str = str(VAR_DIR)
    sweep_interval_s: float = 30.0
    requeue_after_s: float = 300.0
    task_lease_s: int = 60
    webhook_timeout_s: float = 10.0
    webhook_retry_base_s: float = 5.0

    db_pool_size: int = 10
    db_max_overflow: int = 10

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def billing_configured(self) -> bool:
        return bool(self.stripe_secret_key)

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def check_safe(self) -> None:
        """Refuse development-only authentication outside development (raises ValueError)."""
        if self.auth_mode == "dev" and self.is_production:
            raise ValueError("AUTH_MODE=dev is refused when STUDIOX_ENV=production.")
        if (
            self.auth_mode == "dev"
            and self.environment != "development"
            and self.dev_jwt_secret == DEV_JWT_SECRET_DEFAULT
        ):
            raise ValueError(
                "AUTH_MODE=dev outside development needs its own DEV_JWT_SECRET "
                "(the built-in one is public)."
            )

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name: str, default):
            value = env.get(name)
            return default if value is None or value == "" else value

        # STUDIOX_VAR_DIR moves the embedded defaults (tests and side-by-side checkouts).
        var_dir = Path(get("STUDIOX_VAR_DIR", str(VAR_DIR))).resolve()
        broker = (
            get("CELERY_BROKER_URL", None)
            or get("REDIS_URL", None)
            or f"filesystem://{var_dir / 'broker'}"
        )
        return cls(
            var_dir=str(var_dir),
            database_url=normalise_database_url(
                get("DATABASE_URL", f"sqlite:///{var_dir / 'studiox.db'}")
            ),
            broker_url=broker,
            result_backend=get("CELERY_RESULT_BACKEND", None),
            frontend_url=get("FRONTEND_URL", defaults.frontend_url),
            port=int(get("PORT", defaults.port)),
            environment=get("STUDIOX_ENV", defaults.environment),
            log_level=get("LOG_LEVEL", defaults.log_level).upper(),
            # JSON lines in production unless asked otherwise; readable text elsewhere.
            log_format=get(
                "LOG_FORMAT",
                "json" if get("STUDIOX_ENV", defaults.environment) == "production" else "text",
            ),
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
            storage_url=get("STORAGE_URL", f"file://{var_dir / 'artifacts'}"),
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
            ai_http_timeout_s=float(get("AI_HTTP_TIMEOUT_S", defaults.ai_http_timeout_s)),
            ai_http_max_retries=int(get("AI_HTTP_MAX_RETRIES", defaults.ai_http_max_retries)),
            ai_http_backoff_s=float(get("AI_HTTP_BACKOFF_S", defaults.ai_http_backoff_s)),
            s3_endpoint_url=get("S3_ENDPOINT_URL", None),
            task_type_plugins=_split(get("TASK_TYPE_PLUGINS", "")),
            rate_limit=get("RATE_LIMIT", defaults.rate_limit),
            rate_limit_storage_url=get("RATE_LIMIT_STORAGE_URL", None),
            rate_limit_ip=get("RATE_LIMIT_IP", defaults.rate_limit_ip),
            metrics_token=get("METRICS_TOKEN", None),
            metrics_allow=_split(get("METRICS_ALLOW", "")),
            trusted_proxy_count=int(get("TRUSTED_PROXY_COUNT", defaults.trusted_proxy_count)),
            sweep_interval_s=float(get("SWEEP_INTERVAL_S", defaults.sweep_interval_s)),
            requeue_after_s=float(get("REQUEUE_AFTER_S", defaults.requeue_after_s)),
            task_lease_s=int(get("TASK_LEASE_S", defaults.task_lease_s)),
            webhook_timeout_s=float(get("WEBHOOK_TIMEOUT_S", defaults.webhook_timeout_s)),
            webhook_retry_base_s=float(get("WEBHOOK_RETRY_BASE_S", defaults.webhook_retry_base_s)),
            db_pool_size=int(get("DB_POOL_SIZE", defaults.db_pool_size)),
            db_max_overflow=int(get("DB_MAX_OVERFLOW", defaults.db_max_overflow)),
        )

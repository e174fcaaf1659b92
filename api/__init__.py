"""StudioX HTTP API: `create_app()` is the Flask (and `flask --app api`) entry point."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Flask
from flask_cors import CORS
from flask_migrate import Migrate

from shared.config import PROJECT_ROOT, Settings
from shared.db import Database
from shared.tasks import registry


@dataclass
class StudioX:
    """Per-app services, reachable as `current_app.extensions["studiox"]`."""

    settings: Settings
    db: Database
    verifier: object
    producer: object
    send: object = None  # how committed outbox messages leave (tests swap it)
    api_key_resolver: object = None
    openapi: dict | None = None
    extras: dict = field(default_factory=dict)


def create_app(settings: Settings | None = None) -> Flask:
    from api import auth, cli, db, errors, health, metrics, middleware, openapi, ratelimit
    from api.billing.views import blueprint as billing_bp
    from api.queue import make_producer, sender
    from api.tasks.artifacts import blueprint as artifacts_bp
    from api.tasks.views import blueprint as tasks_bp
    from api.users import api_keys
    from api.users.views import blueprint as users_bp
    from shared import outbox
    from shared.logging import configure_logging

    settings = settings or Settings.from_env()
    settings.check_safe()  # e.g. no AUTH_MODE=dev in production
    configure_logging(settings, "api")
    registry.load_plugins(settings.task_type_plugins)

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    database = Database(settings)
    producer = make_producer(settings)
    ext = app.extensions["studiox"] = StudioX(
        settings=settings,
        db=database,
        verifier=auth.TokenVerifier(settings),
        producer=producer,
        send=sender(settings, producer),
        api_key_resolver=api_keys.resolve_api_key,
    )
    outbox.install(database.sessionmaker, lambda message: ext.send(message))

    CORS(
        app,
        origins=[settings.frontend_url],
        supports_credentials=True,
        expose_headers=["X-Request-ID", "Location", "Retry-After"],
    )
    # Flask-Migrate drives Alembic; migrations/env.py takes the engine from StudioX.
    Migrate(directory=str(PROJECT_ROOT / "migrations")).init_app(app)

    db.init_app(app)
    middleware.init_app(app)
    ratelimit.init_app(app)  # after middleware: a 429 still gets a request id and a log line
    metrics.init_app(app)
    errors.register_error_handlers(app)
    for blueprint in (
        health.blueprint,
        users_bp,
        billing_bp,
        tasks_bp,
        artifacts_bp,
        openapi.blueprint,
    ):
        app.register_blueprint(blueprint)
    app.register_blueprint(api_keys.blueprint)
    cli.init_app(app)
    return app

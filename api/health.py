"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from api.openapi import document

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
@document("Liveness: the process answers.", tags=["service"])
def health():
    return {"status": "ok"}


@blueprint.get("/ready")
@document(
    "Readiness: the database and the broker are reachable (503 names which is not).",
    tags=["service"],
    errors=(503,),
)
def ready():
    ext = current_app.extensions["studiox"]
    failing = []
    try:
        with ext.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        failing.append("database")
    try:
        with ext.producer.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:
        failing.append("broker")
    if failing:
        response = jsonify(
            {
                "error": {
                    "code": "service_unavailable",
                    "message": f"Not ready: {', '.join(failing)} unreachable.",
                    "details": {"unavailable": failing},
                }
            }
        )
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response
    return {"status": "ready", "database": "ok", "broker": "ok"}

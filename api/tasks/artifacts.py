"""Downloading a task's output files (artifacts), by their owner only."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from api.auth import Caller, authenticated
from api.db import db_session
from api.errors import ApiError
from api.openapi import document
from shared.errors import NotFound
from shared.storage import Storage, make_storage
from shared.tasks import service as tasks

blueprint = Blueprint("artifacts", __name__)

CHUNK = 256 * 1024


def _storage() -> Storage:
    """One storage client per app, made on first use (S3 clients are costly to build)."""
    ext = current_app.extensions["studiox"]
    storage = ext.extras.get("storage")
    if storage is None:
        settings = ext.settings
        storage = ext.extras["storage"] = make_storage(
            settings.storage_url, settings.s3_endpoint_url
        )
    return storage


def _stream(fileobj):
    try:
        while chunk := fileobj.read(CHUNK):
            yield chunk
    finally:
        fileobj.close()


@blueprint.get("/api/tasks/<task_id>/artifacts/<name>")
@document(
    "Download one of the task's output files (streamed, with its content type).",
    description="Only the task's owner can download; another user's task or an unknown "
    "name is 404. Files are deleted after the retention period (ARTIFACT_RETENTION_DAYS): "
    "the task keeps the artifact's metadata and the download answers 410 artifact_expired.",
    responses={
        200: {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    },
    errors=(404, 410),
)
@authenticated
def download_artifact(caller: Caller, task_id: str, name: str):
    session = db_session()
    task = tasks.get_task(session, caller.user_id, task_id)
    artifact = next((a for a in task.artifacts or [] if a.get("name") == name), None)
    if artifact is None:
        raise NotFound(f"Task {task.id} has no artifact named {name!r}.")
    if artifact.get("expired"):
        raise ApiError(
            410,
            "artifact_expired",
            f"The artifact {name!r} was deleted after the retention period.",
        )
    stored_task_id = str(task.id)
    session.close()  # no database connection held while the file streams
    try:
        fileobj = _storage().open(stored_task_id, name)
    except FileNotFoundError:
        raise ApiError(
            410, "artifact_expired", f"The artifact {name!r} is no longer stored."
        ) from None
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=3600",
    }
    if artifact.get("size") is not None:
        headers["Content-Length"] = str(artifact["size"])
    if artifact.get("sha256"):
        headers["ETag"] = f'"{artifact["sha256"]}"'
    return Response(
        _stream(fileobj),
        mimetype=artifact.get("content_type"),
        headers=headers,
        direct_passthrough=True,
    )

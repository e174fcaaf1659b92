"""A task as clients see it: the JSON of API.md's Task object (API and webhooks)."""

from __future__ import annotations

from shared.base import iso


def _public_input(value):
    """The input as clients see it: inline image bytes are summarised, not echoed."""
    if isinstance(value, dict):
        return {
            key: (
                f"<{len(item)} base64 characters>"
                if key == "image_base64" and isinstance(item, str)
                else _public_input(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_public_input(item) for item in value]
    return value


def task_json(task) -> dict:
    return {
        "id": str(task.id),
        "type": task.type,
        "status": task.status,
        "input": _public_input(task.input),
        "output": task.output,
        "error": task.error,
        "progress": task.progress,
        "cost": task.cost,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at),
        "completed_at": iso(task.completed_at),
        "artifacts": [
            {
                "name": a["name"],
                "content_type": a["content_type"],
                "size": a["size"],
                "sha256": a.get("sha256"),
                "url": f"/api/tasks/{task.id}/artifacts/{a['name']}",
            }
            for a in (task.artifacts or [])
        ],
        "cancel_requested": task.cancel_requested_at is not None,
    }

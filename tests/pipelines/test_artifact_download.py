"""GET /api/tasks/<id>/artifacts/<name> in-process, and the retention job's effect on it."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select

from shared.accounts.service import provision
from shared.base import utcnow
from shared.storage import make_storage
from shared.tasks.artifacts import expire_artifacts
from shared.tasks.models import Task


def _task_with_artifact(db_session, settings, clerk_id: str, ended_days_ago: float = 0):
    user_id, _ = provision(db_session, clerk_id)
    task = Task(
        user_id=user_id,
        type="image_analysis",
        status="succeeded",
        input={},
        cost=0,
        output={},
        completed_at=utcnow() - timedelta(days=ended_days_ago),
    )
    db_session.add(task)
    db_session.flush()  # the task id names the storage directory
    storage = make_storage(settings.storage_url)
    stored = storage.put(str(task.id), "output.png", b"\x89PNG fake bytes", "image/png")
    task.artifacts = [stored.as_dict()]
    db_session.flush()
    return task, storage


def test_owner_downloads_others_get_404(client, auth, db_session, settings):
    client.get("/api/users/me", headers=auth("user_owner"))  # provisions the caller
    task, _ = _task_with_artifact(db_session, settings, "user_owner")
    url = f"/api/tasks/{task.id}/artifacts/output.png"
    response = client.get(url, headers=auth("user_owner"))
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.data == b"\x89PNG fake bytes"
    assert response.headers["ETag"].strip('"') == hashlib.sha256(response.data).hexdigest()
    other = client.get(url, headers=auth("user_other"))
    assert other.status_code == 404 and other.get_json()["error"]["code"] == "not_found"
    missing = client.get(f"/api/tasks/{task.id}/artifacts/nope.png", headers=auth("user_owner"))
    assert missing.status_code == 404 and "nope.png" in missing.get_json()["error"]["message"]
    assert client.get(url).status_code == 401
    traversal = client.get(f"/api/tasks/{task.id}/artifacts/..%2Fx", headers=auth("user_owner"))
    assert traversal.status_code == 404


def test_retention_deletes_files_keeps_metadata_and_download_says_gone(
    client, auth, db_session, settings
):
    client.get("/api/users/me", headers=auth("user_old"))
    old, storage = _task_with_artifact(db_session, settings, "user_old", ended_days_ago=40)
    fresh, _ = _task_with_artifact(db_session, settings, "user_old", ended_days_ago=1)
    assert expire_artifacts(db_session, storage, utcnow() - timedelta(days=30)) == 1
    rows = dict(db_session.execute(select(Task.id, Task.artifacts)).all())
    assert rows[old.id][0]["expired"] is True and rows[old.id][0]["sha256"]
    assert "expired" not in rows[fresh.id][0]
    assert not (storage.root / str(old.id)).exists()
    assert (storage.root / str(fresh.id) / "output.png").exists()
    response = client.get(f"/api/tasks/{old.id}/artifacts/output.png", headers=auth("user_old"))
    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "artifact_expired"
    task_json = client.get(f"/api/tasks/{old.id}", headers=auth("user_old")).get_json()
    assert task_json["artifacts"][0]["name"] == "output.png"  # metadata kept
    assert expire_artifacts(db_session, storage, utcnow() - timedelta(days=30)) == 0


def test_artifact_route_is_documented(client):
    spec = client.get("/openapi.json").get_json()
    operation = spec["paths"]["/api/tasks/{task_id}/artifacts/{name}"]["get"]
    assert {"200", "401", "404", "410"} <= set(operation["responses"])

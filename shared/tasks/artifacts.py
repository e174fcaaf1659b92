"""Artifact retention: files go after the retention period; the task keeps its metadata."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.storage import Storage
from shared.tasks.models import TERMINAL_STATUSES, Task

tasks = Task.__table__


def expire_artifacts(
    session: Session, storage: Storage, cutoff: datetime, batch: int = 1000
) -> int:
    """Delete the files of tasks that ended before `cutoff`; mark their artifacts expired."""
    rows = session.execute(
        select(tasks.c.id, tasks.c.artifacts)
        .where(tasks.c.status.in_(TERMINAL_STATUSES), tasks.c.completed_at < cutoff)
        .limit(batch)
    ).all()
    done = 0
    for task_id, artifacts in rows:
        if not artifacts or all(a.get("expired") for a in artifacts):
            continue
        storage.delete_task(str(task_id))
        session.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(artifacts=[{**a, "expired": True} for a in artifacts])
        )
        done += 1
    return done

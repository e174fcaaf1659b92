"""The beat schedule: the one place periodic jobs are declared."""

from __future__ import annotations

from celery.schedules import crontab

from shared.config import Settings


def beat_schedule(settings: Settings) -> dict:
    return {
        "sweep-stale-tasks": {
            "task": "studiox.sweep_stale_tasks",
            "schedule": settings.sweep_interval_s,
        },
        "reset-due-credits": {
            "task": "studiox.reset_due_credits",
            "schedule": 60.0,  # cheap when nobody is due; users are due at their own time
        },
        "delete-expired-artifacts": {
            "task": "studiox.delete_expired_artifacts",
            "schedule": crontab(minute=17),
        },
    }

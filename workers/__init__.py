"""Celery workers: the app (`workers.celery_app`), tasks, beat schedule and pipelines."""

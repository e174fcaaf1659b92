"""Code shared by the API and the workers: settings, database, models and domain services.

Nothing in this package imports Flask or Celery.
"""

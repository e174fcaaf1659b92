"""The request's database session: opened on first use, closed at the end of the request.

Views commit once, when their unit of work is done; anything left uncommitted is rolled
back at teardown.
"""

from __future__ import annotations

import functools
import logging

from flask import Flask, current_app, g
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

log = logging.getLogger("studiox.db")

# PostgreSQL's "deadlock detected" and "could not serialize": the transaction was rolled
# back as a whole and running it again is the documented remedy.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
ATTEMPTS = 3


def db_session() -> Session:
    session = g.get("db_session")
    if session is None:
        session = g.db_session = current_app.extensions["studiox"].db.session()
    return session


def init_app(app: Flask) -> None:
    @app.teardown_appcontext
    def _close(_exc):
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


def is_retryable(exc: BaseException) -> bool:
    return (
        isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
    )


def retry_transient_conflicts(view):
    """Run the view again (up to 3 times) when PostgreSQL aborted its transaction for a
    deadlock or a serialization failure; nothing of the failed attempt was committed."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return view(*args, **kwargs)
            except DBAPIError as exc:
                if attempt == ATTEMPTS or not is_retryable(exc):
                    raise
                log.warning("transaction conflict (%s), retrying", exc.orig.sqlstate)
                db_session().rollback()

    return wrapper

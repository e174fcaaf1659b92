"""The request's database session: opened on first use, closed at the end of the request.

Views commit once, when their unit of work is done; anything left uncommitted is rolled
back at teardown.
"""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session


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

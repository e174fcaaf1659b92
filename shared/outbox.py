"""Messages that are sent only after the transaction that produced them commits.

Services call `send_after_commit(session, Message(...))`; the process boundary (API or
worker) installs a sender on its sessionmaker. A rolled-back unit of work sends nothing,
and a committed one never waits on the broker inside its transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

_OUTBOX = "studiox_outbox"


@dataclass
class Message:
    """A Celery task to send by name (the sender never imports worker code)."""

    name: str
    args: list[Any] = field(default_factory=list)
    task_id: str | None = None
    countdown: float | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    soft_time_limit: float | None = None
    time_limit: float | None = None
    # Called with the exception when the broker refuses the message.
    on_failure: Callable[[Exception], None] | None = None


def send_after_commit(session: Session, message: Message) -> None:
    session.info.setdefault(_OUTBOX, []).append(message)


def pending(session: Session) -> list[Message]:
    return list(session.info.get(_OUTBOX, ()))


def install(factory: sessionmaker, send: Callable[[Message], None]) -> None:
    """Send each committed session's messages through `send`."""

    @event.listens_for(factory, "after_commit")
    def _flush(session: Session) -> None:
        messages = session.info.pop(_OUTBOX, [])
        for message in messages:
            try:
                send(message)
            except Exception as exc:  # the commit stands; the sweeper re-sends later
                log.warning("could not send %s %s: %s", message.name, message.task_id, exc)
                if message.on_failure is not None:
                    try:
                        message.on_failure(exc)
                    except Exception:
                        log.exception("on_failure of %s failed", message.name)

    @event.listens_for(factory, "after_rollback")
    def _discard(session: Session) -> None:
        session.info.pop(_OUTBOX, None)

"""AI pipelines: one handler per task type, looked up by the type's name.

A handler takes a `TaskContext` and returns the task's output (a JSON-able dict). It
reports progress with `ctx.progress(fraction)` between steps (which also raises
`TaskCanceled` when the user canceled), stores files with `ctx.save_artifact`, and signals
failures with `PermanentError` (fail and refund now) or `TransientError` (retry with
backoff, fail and refund once the type's attempts are spent).
"""

from __future__ import annotations

from collections.abc import Callable

from workers.pipelines.base import TaskContext

Handler = Callable[[TaskContext], dict]

HANDLERS: dict[str, Handler] = {}


def handler(type_name: str):
    def register(fn: Handler) -> Handler:
        HANDLERS[type_name] = fn
        return fn

    return register


def get_handler(type_name: str) -> Handler | None:
    load_builtin()
    return HANDLERS.get(type_name)


def load_builtin() -> None:
    """Import the built-in handlers (NumPy, Pillow, ...). Only the worker needs them; its
    main process calls this before forking, so pool children start with them loaded."""
    from workers.pipelines import builtin  # noqa: F401  (registers the handlers)

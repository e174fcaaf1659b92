"""Tasks: the task-type registry and the task lifecycle."""

"""Helpers for the operations tests: free ports, real server processes, polling."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support.waiting import free_port, wait_for  # noqa: F401  (re-exported for the tests here)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def descendants(root: int) -> set[int]:
    """Every process below `root`, from /proc (pids whose parent chain reaches it)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")".
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier}
        frontier = children - found
        found |= children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture()
def live_client(app, committed):
    """The app with real commits and real sends to the test Redis broker."""
    return app.test_client()


def clean_env(**overrides) -> dict[str, str]:
    """This environment without any StudioX service settings, plus `overrides`."""
    drop = (
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "REDIS_URL",
        "RATE_LIMIT_STORAGE_URL",
        "AUTH_MODE",
        "DEV_JWT_SECRET",
        "PROMETHEUS_MULTIPROC_DIR",
        "STUDIOX_ENV",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({k: str(v) for k, v in overrides.items()})
    return env

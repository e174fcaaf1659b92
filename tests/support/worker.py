"""Real `celery worker` (and beat) processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.config import PROJECT_ROOT, Settings


def process_env(settings: Settings, **overrides) -> dict[str, str]:
    """The environment a worker/beat/API process needs to share the tests' services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "DATABASE_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        CELERY_BROKER_URL=settings.broker_url,
        AUTH_MODE=settings.auth_mode,
        DEV_JWT_SECRET=settings.dev_jwt_secret,
        STORAGE_URL=settings.storage_url,
        TASK_TYPE_PLUGINS=",".join(settings.task_type_plugins),
        LOG_LEVEL="INFO",
        LOG_FORMAT="text",
        PYTHONPATH=str(PROJECT_ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class CeleryProcess:
    """`celery -A workers.celery_app <command>`, logging to a file the test can read."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path):
        self.command = command
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, ready_marker: str | None = "ready.", timeout: float = 30.0) -> CeleryProcess:
        self.log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", *self.command],
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we can stop it and its children
        )
        if ready_marker:
            self.wait_for_log(ready_marker, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, marker: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery exited early:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"celery not {marker!r} after {timeout}s:\n{self.log()[-3000:]}")

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL the main process and its children (its own process group)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log_file.close()


def worker(settings: Settings, log_path: Path, concurrency: int = 2, **env) -> CeleryProcess:
    return CeleryProcess(
        [
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "-Q",
            "studiox",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"w{os.getpid()}-{time.monotonic_ns()}@%h",
        ],
        process_env(settings, **env),
        log_path,
    )


def beat(settings: Settings, log_path: Path, schedule_path: Path, **env) -> CeleryProcess:
    return CeleryProcess(
        ["beat", "--loglevel=INFO", f"--schedule={schedule_path}"],
        process_env(settings, **env),
        log_path,
    )

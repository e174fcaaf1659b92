"""Processes a benchmark starts on 127.0.0.1: gunicorn with the production config, real
Celery workers, and a Redis database of its own. Everything is stopped on exit.
(Underscored: `python -m bench` skips it.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis
from celery import Celery

from shared.config import PROJECT_ROOT, Settings

REDIS_HOST = os.environ.get("BENCH_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_database() -> Iterator[str]:
    """A Redis database number no test or other bench holds (same slots as the tests)."""
    admin = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    for n in range(15, 0, -1):
        if admin.set(f"studiox:test-slot:{n}", f"bench-{os.getpid()}", nx=True, ex=3600):
            break
    else:
        raise RuntimeError("no free Redis database (1..15)")
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n).flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{n}"
    finally:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n).flushdb()
        admin.delete(f"studiox:test-slot:{n}")


BENCH_JWT_SECRET = "bench-secret-0123456789abcdef0123456789"


@contextmanager
def stack(prefix: str, *, result_backend: bool = False) -> Iterator[tuple[Path, object, Settings]]:
    """A work folder, a throwaway database and a Redis database of the benchmark's own,
    with the Settings that point at them (dev tokens; a Redis result backend if asked)."""
    from bench._support import throwaway_database

    with (
        tempfile.TemporaryDirectory() as tmp,
        throwaway_database(prefix) as db,
        redis_database() as broker,
    ):
        workdir = Path(tmp)
        yield (
            workdir,
            db,
            db.settings(
                broker_url=broker,
                auth_mode="dev",
                dev_jwt_secret=BENCH_JWT_SECRET,
                storage_url=f"file://{workdir}/artifacts",
                result_backend=broker if result_backend else None,
            ),
        )


def process_env(settings: Settings, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "DATABASE_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        CELERY_BROKER_URL=settings.broker_url,
        AUTH_MODE="dev",
        DEV_JWT_SECRET=settings.dev_jwt_secret,
        STORAGE_URL=settings.storage_url,
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
        PYTHONPATH=str(PROJECT_ROOT),
        STUDIOX_ENV="bench",  # dev tokens are refused in production
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Service:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.log = log
        self.handle = log.open("ab")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.handle.close()


@contextmanager
def gunicorn(settings: Settings, workdir: Path, **env) -> Iterator[tuple[str, Service]]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "api:create_app()",
    ]
    # Limits stay on (they cost what they cost in production) but high enough that one
    # loopback load generator is never refused.
    limits = {"RATE_LIMIT": "10000000 per minute", "RATE_LIMIT_IP": "10000000 per minute"}
    service = Service(
        argv, process_env(settings, PORT=port, **{**limits, **env}), workdir / "gunicorn.log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or service.proc.poll() is not None:
                raise RuntimeError("gunicorn did not start:\n" + service.log.read_text()[-2000:])
            time.sleep(0.1)
        yield base, service
    finally:
        service.stop()


@contextmanager
def celery_worker(
    settings: Settings,
    workdir: Path,
    concurrency: int = 2,
    app: str = "workers.celery_app",
    **env,
) -> Iterator[Service]:
    env = process_env(settings, **{"LOG_LEVEL": "INFO", **env})
    name = f"bench{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        # As the Procfile does: Celery sets the root logger to --loglevel, over LOG_LEVEL.
        f"--loglevel={env['LOG_LEVEL']}",
        f"--concurrency={concurrency}",
        "-Q",
        "studiox",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        name,
    ]
    service = Service(argv, env, workdir / "worker.log")
    # Ready when it answers a control ping: its "ready." line is not logged below INFO.
    probe = Celery("bench-probe", broker=settings.broker_url)
    try:
        deadline = time.monotonic() + 30
        while not probe.control.ping(destination=[name], timeout=0.2):
            if time.monotonic() > deadline or service.proc.poll() is not None:
                raise RuntimeError("worker did not start:\n" + service.log.read_text()[-2000:])
        yield service
    finally:
        probe.close()
        service.stop()


def rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0

"""Submit -> succeeded latency of a small `image_analysis` with idle workers, beside the
bare Celery round trip (a no-op task's `delay().get()`) measured in the same run.

The client submits with `Prefer: wait=10`, so one HTTP round trip returns the finished
task. 200 samples, one at a time. Run: `.venv/bin/python -m bench latency`.
"""

from __future__ import annotations

import base64
import io
import statistics
import time

import httpx
from celery import Celery
from PIL import Image

from api.auth import make_dev_token
from bench._services import celery_worker, gunicorn, stack
from bench._support import print_table

SAMPLES = int(__import__("os").environ.get("BENCH_LATENCY_SAMPLES", "200"))


def small_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def grant_credits(settings, clerk_id: str, amount: int) -> None:
    """Give a benchmark user enough credits for every sample (through the ledger)."""
    from shared.accounts.service import find_user_id
    from shared.credits import service as credits
    from shared.db import Database

    database = Database(settings)
    try:
        with database.session_scope() as session:
            credits.grant(session, find_user_id(session, clerk_id), amount, "admin_grant")
    finally:
        database.dispose()


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return statistics.median(ordered) * 1000, pick(0.95), pick(0.99)


def bare_round_trips(broker: str, n: int) -> list[float]:
    """`studiox.ping` (a no-op) through the same broker and worker, with a
    Redis result backend so `.get()` can wait for it."""
    app = Celery("bench", broker=broker, backend=broker)
    app.conf.update(
        task_default_queue="studiox",
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
    )
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        app.send_task("studiox.ping").get(timeout=10)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    with stack("latency", result_backend=True) as (workdir, db, settings):
        broker = settings.broker_url
        env = {"CELERY_RESULT_BACKEND": broker}
        with (
            gunicorn(settings, workdir) as (base, _),
            celery_worker(settings, workdir, **env),
        ):
            token = make_dev_token(settings, "latency_user")
            headers = {"Authorization": f"Bearer {token}", "Prefer": "wait=10"}
            body = {"type": "image_analysis", "input": {"image_base64": small_png()}}
            with httpx.Client(base_url=base, timeout=30) as client:
                client.post("/api/users/initialize", headers=headers)
                grant_credits(settings, "latency_user", SAMPLES * 2)
                for _ in range(5):  # warm up the worker's pool processes
                    client.post("/api/tasks", json=body, headers=headers)
                samples, statuses = [], set()
                for _ in range(SAMPLES):
                    started = time.perf_counter()
                    response = client.post("/api/tasks", json=body, headers=headers)
                    samples.append(time.perf_counter() - started)
                    statuses.add((response.status_code, response.json()["status"]))
            bare = bare_round_trips(broker, SAMPLES)
        task_p = percentiles(samples)
        bare_p = percentiles(bare)
        print_table(
            f"submit -> succeeded, {SAMPLES} samples (idle worker, 2 processes)",
            ["path", "p50 ms", "p95 ms", "p99 ms"],
            [
                ["POST /api/tasks image_analysis 64x64 (Prefer: wait)", *task_p],
                ["bare Celery delay().get() no-op", *bare_p],
                ["ratio (task / bare)", *(t / b for t, b in zip(task_p, bare_p, strict=True))],
            ],
        )
        print(f"  outcomes: {sorted(statuses)}  (targets: p50 <= 50 ms, p99 <= 200 ms)")


if __name__ == "__main__":
    main()

"""Soak: minutes of mixed traffic while a chaos loop kills worker pool children.

gunicorn (production config) on a spare loopback port, 2 real Celery workers and beat,
a fresh database and a Redis database of its own. A bounded client (a few threads, each
one request at a time) creates tasks, polls them, cancels some, replays creations with
the same Idempotency-Key and lists; every CHAOS_INTERVAL_S a random pool child of a random
worker is SIGKILLed. Then the traffic stops, the tasks drain, and the run passes only
with zero 5xx, zero tasks left queued/processing and a clean credits audit.

Run: `make soak` (SOAK_SECONDS=300 by default; SOAK_CLIENTS, SOAK_DRAIN_SECONDS).
Not part of `make bench` or CI.
"""

from __future__ import annotations

import base64
import io
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

from api.auth import make_dev_token
from bench._services import Service, celery_worker, gunicorn, process_env, redis_database
from bench._support import print_table, throwaway_database
from shared.config import PROJECT_ROOT

# `python -m bench` runs every module with a main(); a soak takes minutes: only by name.
STANDALONE = True

SOAK_S = float(os.environ.get("SOAK_SECONDS", "300"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "4"))
DRAIN_S = float(os.environ.get("SOAK_DRAIN_SECONDS", "120"))
CHAOS_INTERVAL_S = float(os.environ.get("SOAK_CHAOS_INTERVAL", "20"))
USERS = 16
# Short leases and sweeps, so a killed child's task comes back within seconds, not a minute.
WORKER_ENV = {
    "TASK_LEASE_S": 5,
    "SWEEP_INTERVAL_S": 2,
    "REQUEUE_AFTER_S": 30,
    "TASK_TYPE_PLUGINS": "tests.support.task_types",
}
# One loopback client IP makes all the traffic: lift the per-IP and per-user request
# limits (a soak is about faults, not throttling; the plan's task limit still applies).
API_ENV = {
    "TASK_TYPE_PLUGINS": "tests.support.task_types",
    "RATE_LIMIT": "1000000 per minute",
    "RATE_LIMIT_IP": "1000000 per minute",
}
TERMINAL = {"succeeded", "failed", "canceled"}


def _small_png() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), (20, 120, 200)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Tally:
    """Counts shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: Counter = Counter()  # "create 202", "poll 200", ...
        self.server_errors: list[str] = []
        self.transport_errors: Counter = Counter()
        self.task_ids: set[str] = set()
        self.replays_same = 0
        self.replays_different = 0

    def record(self, action: str, response: httpx.Response) -> None:
        with self.lock:
            self.requests[f"{action} {response.status_code}"] += 1
            if response.status_code >= 500:
                self.server_errors.append(f"{action} {response.status_code}: {response.text[:300]}")


def client_loop(
    base: str, tokens: list[str], stop: threading.Event, tally: Tally, seed: int
) -> None:
    """One client: one request at a time (that is the bound), a random mix of actions."""
    rnd = random.Random(seed)
    png = _small_png()
    mine: list[tuple[str, str]] = []  # (task id, token)
    keyed: list[tuple[str, dict, str, str]] = []  # (key, body, token, task id)
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.is_set():
            token = rnd.choice(tokens)
            headers = {"Authorization": f"Bearer {token}"}
            roll = rnd.random()
            try:
                if roll < 0.40 or not mine:
                    if rnd.random() < 0.3:
                        body = {"type": "image_analysis", "input": {"image_base64": png}}
                    else:
                        body = {
                            "type": "echo",
                            "input": {
                                "steps": rnd.randint(1, 20),
                                "step_seconds": 0.05,
                                "fail": rnd.choice([None] * 8 + ["permanent", "transient_once"]),
                            },
                        }
                    key = uuid.uuid4().hex if rnd.random() < 0.3 else None
                    if key:
                        headers["Idempotency-Key"] = key
                    response = http.post("/api/tasks", json=body, headers=headers)
                    tally.record("create", response)
                    if response.status_code in (200, 202):
                        task_id = response.json()["id"]
                        mine.append((task_id, token))
                        with tally.lock:
                            tally.task_ids.add(task_id)
                        if key:
                            keyed.append((key, body, token, task_id))
                elif roll < 0.75:
                    task_id, owner = rnd.choice(mine)
                    response = http.get(
                        f"/api/tasks/{task_id}", headers={"Authorization": f"Bearer {owner}"}
                    )
                    tally.record("poll", response)
                elif roll < 0.85:
                    task_id, owner = rnd.choice(mine)
                    response = http.post(
                        f"/api/tasks/{task_id}/cancel", headers={"Authorization": f"Bearer {owner}"}
                    )
                    tally.record("cancel", response)
                elif roll < 0.95 and keyed:
                    key, body, owner, task_id = rnd.choice(keyed)
                    response = http.post(
                        "/api/tasks",
                        json=body,
                        headers={"Authorization": f"Bearer {owner}", "Idempotency-Key": key},
                    )
                    tally.record("replay", response)
                    if response.status_code in (200, 202):
                        with tally.lock:
                            if response.json()["id"] == task_id:
                                tally.replays_same += 1
                            else:
                                tally.replays_different += 1
                else:
                    response = http.get("/api/tasks?limit=20", headers=headers)
                    tally.record("list", response)
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.transport_errors[type(exc).__name__] += 1
            # A little think time keeps the load bounded and the mix realistic.
            stop.wait(rnd.uniform(0.005, 0.03))


def chaos_loop(workers: list[Service], stop: threading.Event, kills: list[str]) -> None:
    """Every CHAOS_INTERVAL_S, SIGKILL one random pool child of a random worker."""
    rnd = random.Random(7)
    while not stop.wait(CHAOS_INTERVAL_S):
        worker = rnd.choice(workers)
        children = worker.children()
        if not children:
            continue
        victim = rnd.choice(children)
        try:
            os.kill(victim, signal.SIGKILL)
            kills.append(f"{time.strftime('%H:%M:%S')} pid {victim}")
        except ProcessLookupError:
            pass


def _prepare_users(settings, tokens_for: list[str]) -> None:
    """Accounts with credits for the whole run, on a plan with room for concurrency."""
    from sqlalchemy import update

    from shared.accounts.models import User
    from shared.accounts.service import provision
    from shared.credits import service as credits
    from shared.db import Database

    database = Database(settings)
    try:
        with database.session_scope() as session:
            for clerk_id in tokens_for:
                user_id, _ = provision(session, clerk_id)
                credits.grant(session, user_id, 100_000, "admin_grant")
            session.execute(
                update(User).where(User.clerk_id.in_(tokens_for)).values(plan_id="enterprise")
            )
    finally:
        database.dispose()


def _final_state(settings) -> tuple[Counter, list, dict]:
    from sqlalchemy import func, select

    from shared.credits import service as credits
    from shared.credits.models import CreditLedger
    from shared.db import Database
    from shared.tasks.models import Task

    database = Database(settings)
    try:
        with database.session_scope() as session:
            statuses = Counter(
                dict(session.execute(select(Task.status, func.count()).group_by(Task.status)).all())
            )
            mismatches = credits.audit(session)
            ledger = dict(
                session.execute(
                    select(CreditLedger.reason, func.count()).group_by(CreditLedger.reason)
                ).all()
            )
    finally:
        database.dispose()
    return statuses, mismatches, ledger


def run() -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="studiox-soak-"))
    try:
        ok = _soak(workdir)
    except BaseException:
        print(f"soak aborted; logs kept in {workdir}", flush=True)
        raise
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs kept in {workdir}", flush=True)
    return ok


def _soak(workdir: Path) -> bool:
    clerk_ids = [f"soak_{n}" for n in range(USERS)]
    with ExitStack() as stack:
        database = stack.enter_context(throwaway_database("soak"))
        broker = stack.enter_context(redis_database())
        settings = database.settings(
            broker_url=broker,
            auth_mode="dev",
            dev_jwt_secret="soak-secret-for-hs256-tokens-0123456789",
            storage_url=f"file://{workdir / 'artifacts'}",
            task_type_plugins=("tests.support.task_types",),
        )
        _prepare_users(settings, clerk_ids)
        tokens = [make_dev_token(settings, c) for c in clerk_ids]

        workers = []
        for n in range(2):
            (workdir / f"w{n}").mkdir()
            workers.append(
                stack.enter_context(
                    celery_worker(settings, workdir / f"w{n}", concurrency=2, **WORKER_ENV)
                )
            )
        beat = Service(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "beat",
                "--loglevel=INFO",
                f"--schedule={workdir / 'beat-schedule'}",
            ],
            process_env(settings, LOG_LEVEL="INFO", **WORKER_ENV),
            workdir / "beat.log",
        )
        stack.callback(beat.stop)
        base, _server = stack.enter_context(gunicorn(settings, workdir, **API_ENV))
        print(
            f"soak: {SOAK_S:.0f}s of traffic from {CLIENTS} clients against {base}, "
            f"2 workers x 2 children + beat, a child killed every {CHAOS_INTERVAL_S:.0f}s "
            f"(logs in {workdir})",
            flush=True,
        )

        tally, kills, stop = Tally(), [], threading.Event()
        threads = [
            threading.Thread(target=client_loop, args=(base, tokens, stop, tally, n), daemon=True)
            for n in range(CLIENTS)
        ]
        threads.append(
            threading.Thread(target=chaos_loop, args=(workers, stop, kills), daemon=True)
        )
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            while time.monotonic() - started < SOAK_S:
                time.sleep(min(30.0, max(0.1, SOAK_S - (time.monotonic() - started))))
                print(
                    f"  {time.monotonic() - started:4.0f}s: {sum(tally.requests.values())} "
                    f"requests, {len(tally.task_ids)} tasks, {len(kills)} kills, "
                    f"{len(tally.server_errors)} 5xx",
                    flush=True,
                )
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)

        # Drain: the sweeper hands back what the killed children held.
        drain_started = time.monotonic()
        while True:
            statuses, mismatches, ledger = _final_state(settings)
            left = sum(n for s, n in statuses.items() if s not in TERMINAL)
            if not left or time.monotonic() - drain_started > DRAIN_S:
                break
            time.sleep(1)
        drained_in = time.monotonic() - drain_started

    requests = sum(tally.requests.values())
    print_table(
        "Soak: requests by action and status", ["request", "count"], sorted(tally.requests.items())
    )
    print_table(
        "Soak: outcome",
        ["figure", "value"],
        [
            ("traffic seconds", round(SOAK_S)),
            ("requests", requests),
            ("requests per second", round(requests / SOAK_S, 1)),
            ("5xx responses", len(tally.server_errors)),
            ("transport errors", sum(tally.transport_errors.values())),
            ("tasks accepted", len(tally.task_ids)),
            ("tasks in database", sum(statuses.values())),
            *((f"tasks {s}", n) for s, n in sorted(statuses.items())),
            ("idempotent replays (same task)", tally.replays_same),
            ("idempotent replays (another task!)", tally.replays_different),
            ("worker children killed", len(kills)),
            (
                "ledger task_charge / task_refund",
                f"{ledger.get('task_charge', 0)} / {ledger.get('task_refund', 0)}",
            ),
            ("drain seconds", round(drained_in, 1)),
            ("non-terminal tasks after drain", left),
            ("audit mismatches", len(mismatches)),
        ],
    )
    for line in tally.server_errors[:10]:
        print("  5xx:", line)
    refunds_expected = statuses.get("failed", 0) + statuses.get("canceled", 0)
    ok = (
        not tally.server_errors
        and not tally.transport_errors
        and left == 0
        and not mismatches
        and tally.replays_different == 0
        and len(tally.task_ids) == sum(statuses.values())
        and ledger.get("task_charge", 0) == sum(statuses.values())
        and ledger.get("task_refund", 0) == refunds_expected
        and len(kills) >= max(1, int(SOAK_S // CHAOS_INTERVAL_S) - 1)
    )
    print(f"\nsoak {'PASSED' if ok else 'FAILED'}", flush=True)
    return ok


def main() -> None:
    if not run():
        raise SystemExit(1)


if __name__ == "__main__":
    os.chdir(PROJECT_ROOT)
    main()

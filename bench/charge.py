"""Charges per second through `credits.charge_task`, beside the same transaction in raw SQL.

Each charge is one unit of work, as in the API: open a session, charge, commit. The raw
side sends the same statements (the conditional UPDATE ... FROM (SELECT ... FOR UPDATE)
RETURNING, the ledger INSERT, COMMIT) over plain psycopg connections, so the difference
is what SQLAlchemy, the pool and the service cost. Two shapes of load:

- own user: each thread charges its own user (many users at once, the usual case);
- one user: every thread charges the same user (they queue on that row's lock).

    .venv/bin/python -m bench.charge          (BENCH_CHARGE_SECONDS, default 3 per cell)
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from sqlalchemy import func, select, text

from bench._support import print_table, throwaway_database
from shared.credits import service as credits
from shared.credits.models import CreditLedger
from shared.db import Database

THREADS = (1, 4, 16)
SECONDS = float(os.environ.get("BENCH_CHARGE_SECONDS", "3"))
BALANCE = 10_000_000  # never runs out: every charge is accepted

# What `charge_task` sends for a charge of `cost` (see `_change_balance`).
RAW_CHARGE = """
    UPDATE users
    SET plan_credits = users.plan_credits
            - CASE WHEN users.plan_credits < %(cost)s THEN users.plan_credits ELSE %(cost)s END,
        purchased_credits = users.purchased_credits - (%(cost)s
            - CASE WHEN users.plan_credits < %(cost)s THEN users.plan_credits ELSE %(cost)s END)
    FROM (SELECT users.id, users.plan_credits, users.purchased_credits
          FROM users WHERE users.id = %(user_id)s FOR UPDATE) AS old
    WHERE users.id = old.id AND users.id = %(user_id)s
      AND users.plan_credits + users.purchased_credits >= %(cost)s
    RETURNING old.plan_credits, old.purchased_credits, users.plan_credits,
              users.purchased_credits
"""
RAW_LEDGER = """
    INSERT INTO credit_ledger (user_id, delta, bucket, reason, task_id, stripe_event_id,
                               note, balance_after, created_at)
    VALUES (%s, %s, %s, 'task_charge', %s, NULL, NULL, %s, %s)
"""


def raw_charge(conn: psycopg.Connection, user_id: uuid.UUID, cost: int = 1) -> None:
    task_id = uuid.uuid4()
    plan_before, purchased_before, plan_after, purchased_after = conn.execute(
        RAW_CHARGE, {"cost": cost, "user_id": user_id}
    ).fetchone()
    now = datetime.now(UTC)
    if plan_after != plan_before:
        conn.execute(
            RAW_LEDGER,
            (
                user_id,
                plan_after - plan_before,
                "plan",
                task_id,
                plan_after + purchased_before,
                now,
            ),
        )
    if purchased_after != purchased_before:
        conn.execute(
            RAW_LEDGER,
            (
                user_id,
                purchased_after - purchased_before,
                "purchased",
                task_id,
                plan_after + purchased_after,
                now,
            ),
        )
    conn.commit()


def measure(workers: list[Callable[[], None]], seconds: float) -> float:
    """Run each worker in its own thread, in a loop, for `seconds`; charges per second."""
    counts = [0] * len(workers)
    start = threading.Barrier(len(workers) + 1)
    stop = threading.Event()

    def loop(index: int, work: Callable[[], None]) -> None:
        start.wait()
        while not stop.is_set():
            work()
            counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


def main() -> None:
    rows = []
    with throwaway_database("charge") as bench_db:
        database = Database(bench_db.settings(db_pool_size=max(THREADS), db_max_overflow=0))
        with database.session_scope() as session:
            user_ids = []
            for n in range(max(THREADS)):
                user_id = uuid.uuid4()
                session.execute(
                    text(
                        "INSERT INTO users (id, clerk_id, plan_id, plan_credits, "
                        "purchased_credits, credits_reset_at, created_at) "
                        "VALUES (:id, :clerk, 'free', 0, 0, '2999-01-01', now())"
                    ),
                    {"id": user_id, "clerk": f"bench_{n}"},
                )
                credits.grant(session, user_id, BALANCE, "admin_grant")
                user_ids.append(user_id)
        raw_connections = [psycopg.connect(bench_db.dsn) for _ in range(max(THREADS))]

        def service_worker(user_id):
            def work():
                with database.session_scope() as session:
                    credits.charge_task(session, user_id, uuid.uuid4(), 1)

            return work

        def raw_worker(conn, user_id):
            return lambda: raw_charge(conn, user_id)

        # Warm both sides up (pool connections, prepared statements) before measuring.
        measure([service_worker(u) for u in user_ids], 0.5)
        measure([raw_worker(c, u) for c, u in zip(raw_connections, user_ids, strict=True)], 0.5)

        for shape in ("own user", "one user"):
            for threads in THREADS:
                targets = user_ids[:threads] if shape == "own user" else [user_ids[0]] * threads
                service = measure([service_worker(u) for u in targets], SECONDS)
                raw = measure(
                    [raw_worker(raw_connections[i], u) for i, u in enumerate(targets)], SECONDS
                )
                rows.append([shape, threads, service, raw, service / raw])
                print(
                    f"  {shape}, {threads} threads: {service:,.0f}/s vs raw {raw:,.0f}/s",
                    flush=True,
                )

        for conn in raw_connections:
            conn.close()
        with database.session_scope() as session:
            mismatches = credits.audit(session)
            charges = session.execute(
                select(func.count()).where(CreditLedger.reason == "task_charge")
            ).scalar_one()
        database.dispose()
    assert mismatches == [], mismatches
    print_table(
        f"charges per second, cost 1, one committed transaction each ({SECONDS:g} s per cell)",
        ["load", "threads", "service/s", "raw SQL/s", "service/raw"],
        rows,
    )
    print(f"  audit after {charges:,} charges: every balance matches its ledger")


if __name__ == "__main__":
    main()

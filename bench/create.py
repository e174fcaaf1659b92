"""`POST /api/tasks` through gunicorn (production config) beside the ceiling of the same
machine: pgbench replaying the SQL the endpoint issues, at the same concurrency.

Prints throughput and p50/p95/p99 latency at 1, 8 and 32 clients, the ratio to the
ceiling, p99 at half the peak rate (open loop), and the peak RSS of the gunicorn workers.
The load generator runs in a process of its own; everything is on 127.0.0.1.
Run: `.venv/bin/python -m bench create` (or `make bench`).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import psycopg

from api.auth import make_dev_token
from bench._load import run_load
from bench._services import gunicorn, rss_mb, stack
from bench._support import PG_HOST, PG_PORT, PG_USER, print_table

USERS = 64
DURATION_S = float(os.environ.get("BENCH_CREATE_SECONDS", "8"))
CLIENTS = (1, 8, 32)

# The statements one `POST /api/tasks` sends (from SQLAlchemy's echo), for pgbench:
# look up the caller, charge + insert task + ledger rows (one CTE), count active tasks.
PGBENCH_SCRIPT = """
\\set u random(1, {users})
BEGIN;
SELECT users.id FROM users WHERE users.clerk_id = 'bench_' || :u;
WITH old AS (
    SELECT id, plan_credits, purchased_credits FROM users WHERE clerk_id = 'bench_' || :u FOR UPDATE
), charged AS (
    UPDATE users u
    SET plan_credits = u.plan_credits - LEAST(u.plan_credits, 1),
        purchased_credits = u.purchased_credits - (1 - LEAST(u.plan_credits, 1))
    FROM old
    WHERE u.id = old.id AND u.plan_credits + u.purchased_credits >= 1
    RETURNING u.id AS user_id, old.plan_credits - u.plan_credits AS from_plan,
              old.purchased_credits - u.purchased_credits AS from_purchased,
              u.plan_credits + u.purchased_credits AS total_after
), ids AS (SELECT gen_random_uuid() AS task_id), task AS (
    INSERT INTO tasks (id, user_id, type, status, input, progress, cost, cost_plan,
                       cost_purchased, artifacts, attempts, request_id, enqueued_at, created_at,
                       updated_at)
    SELECT ids.task_id, user_id, 'image_analysis', 'queued', '{{"image_url": "https://example.com/a.png"}}'::jsonb, 0, 1,
           from_plan, from_purchased, '[]'::jsonb, 0, 'req', now(), now(), now()
    FROM charged, ids RETURNING id
), ledger AS (
    INSERT INTO credit_ledger (user_id, delta, bucket, reason, task_id, balance_after, created_at)
    SELECT user_id, -from_purchased, 'purchased', 'task_charge', ids.task_id, total_after, now()
    FROM charged, ids WHERE from_purchased > 0
)
SELECT from_plan, from_purchased FROM charged;
SELECT plans.max_concurrent_tasks, (SELECT count(*) FROM tasks WHERE tasks.user_id = users.id
       AND tasks.status IN ('queued', 'processing'))
FROM users JOIN plans ON plans.id = users.plan_id WHERE users.clerk_id = 'bench_' || :u;
END;
"""


def seed(dsn: str) -> None:
    """USERS callers with plenty of purchased credits and no concurrency ceiling (no worker
    runs here, so every created task stays queued)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE plans SET max_concurrent_tasks = 100000000")
        conn.execute(
            """
            INSERT INTO users (id, clerk_id, plan_id, plan_credits, purchased_credits,
                               credits_reset_at, created_at)
            SELECT gen_random_uuid(), 'bench_' || g, 'enterprise', 0, 1000000000,
                   now() + interval '1 month', now()
            FROM generate_series(1, %s) g
            """,
            (USERS,),
        )
        conn.execute(
            """
            INSERT INTO credit_ledger (user_id, delta, bucket, reason, balance_after, created_at)
            SELECT id, purchased_credits, 'purchased', 'admin_grant', purchased_credits, now()
            FROM users
            """
        )


def pgbench(dbname: str, clients: int, workdir: Path) -> float:
    script = workdir / "create.sql"
    script.write_text(PGBENCH_SCRIPT.format(users=USERS))
    out = subprocess.run(
        [
            "pgbench",
            "-n",
            "-h",
            PG_HOST,
            "-p",
            str(PG_PORT),
            "-U",
            PG_USER,
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(int(DURATION_S)),
            "-f",
            str(script),
            dbname,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def main() -> None:
    with stack("create") as (workdir, db, settings):
        seed(db.dsn)
        ceiling = {c: pgbench(db.name, c, workdir) for c in CLIENTS}
        body = {"type": "image_analysis", "input": {"image_url": "https://example.com/a.png"}}
        headers = [
            {"Authorization": f"Bearer {make_dev_token(settings, f'bench_{i}')}"}
            for i in range(1, USERS + 1)
        ]
        with gunicorn(settings, workdir) as (base, server):
            url = base + "/api/tasks"
            run_load(url, [body] * USERS, headers, concurrency=4, duration_s=2)  # warm up
            rows, peak = [], 0.0
            for clients in CLIENTS:
                r = run_load(
                    url, [body] * USERS, headers, concurrency=clients, duration_s=DURATION_S
                )
                bad = {k: v for k, v in r["statuses"].items() if k != 202}
                peak = max(peak, r["rps"])
                rows.append(
                    [
                        clients,
                        r["rps"],
                        r["p50_ms"],
                        r["p95_ms"],
                        r["p99_ms"],
                        ceiling[clients],
                        f"{100 * r['rps'] / ceiling[clients]:.0f}%",
                        str(bad or "-"),
                    ]
                )
            half = run_load(
                url, [body] * USERS, headers, concurrency=32, duration_s=DURATION_S, rate=peak / 2
            )
            worker_rss = max(rss_mb(pid) for pid in server.children())
        print_table(
            "POST /api/tasks through gunicorn vs pgbench replaying its SQL (same run)",
            [
                "clients",
                "req/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "pgbench TPS",
                "of ceiling",
                "non-202",
            ],
            rows,
        )
        print(
            f"\n  at half the peak rate ({peak / 2:,.0f} req/s, open loop): "
            f"p50 {half['p50_ms']:.1f} ms, p99 {half['p99_ms']:.1f} ms (target <= 50 ms)"
        )
        print(
            f"  peak RSS of a gunicorn worker after the load: {worker_rss:.0f} MB "
            "(target <= 120 MB)"
        )


if __name__ == "__main__":
    main()

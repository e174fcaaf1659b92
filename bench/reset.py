"""Monthly reset of 1,000,000 due users through `credits.reset_due`, against the floor.

The floor is a bare `UPDATE users SET plan_credits = <allowance>` over the same rows, in
the same database, in the same run: what the reset cannot beat, because it must at least
rewrite every due row. The reset also moves each reset date and writes one ledger row
per user, in batches so no transaction holds a million row locks.

    .venv/bin/python -m bench.reset            (BENCH_RESET_USERS, BENCH_RESET_BATCH)
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import psycopg
from sqlalchemy import text

from bench._support import print_table, throwaway_database, timed
from shared.credits import service as credits
from shared.db import Database

USERS = int(os.environ.get("BENCH_RESET_USERS", "1000000"))
BATCHES = [int(b) for b in os.environ.get("BENCH_RESET_BATCH", "100000").split(",")]
# The full audit of a million users takes about as long as the reset; opt in.
AUDIT = os.environ.get("BENCH_RESET_AUDIT", "") == "1"
NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)

FLOOR_SQL = """
    UPDATE users u SET plan_credits = p.monthly_credits
    FROM plans p
    WHERE p.id = u.plan_id AND u.credits_reset_at <= %(now)s
"""


def seed(conn: psycopg.Connection, count: int) -> None:
    """`count` users due over the last 60 days, on all three plans, with the ledger rows
    that back their balances (so the audit afterwards means something)."""
    conn.execute(
        """
        INSERT INTO users (id, clerk_id, plan_id, plan_credits, purchased_credits,
                           credits_reset_at, created_at)
        SELECT gen_random_uuid(), 'bench_' || g, (ARRAY['free', 'pro', 'enterprise'])[g %% 3 + 1],
               g %% 7, g %% 5, %(now)s - (g %% 86400) * interval '1 minute', %(now)s
        FROM generate_series(1, %(count)s) AS g
        """,
        {"now": NOW, "count": count},
    )
    conn.execute(
        """
        INSERT INTO credit_ledger (user_id, delta, bucket, reason, balance_after, created_at)
        SELECT id, plan_credits, 'plan', 'signup_grant', plan_credits, created_at FROM users
        UNION ALL
        SELECT id, purchased_credits, 'purchased', 'purchase',
               plan_credits + purchased_credits, created_at
        FROM users WHERE purchased_credits > 0
        """
    )
    conn.commit()


def vacuum(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE users")
        conn.execute("VACUUM ANALYZE credit_ledger")
        conn.execute("CHECKPOINT")  # so neither measurement pays for the other's writes


def run(batch_size: int) -> list:
    figures: dict[str, float] = {}
    with throwaway_database("reset") as bench_db:
        with psycopg.connect(bench_db.dsn) as conn, timed(figures, "seed"):
            seed(conn, USERS)
        print(f"  seeded {USERS:,} users in {figures['seed']:.1f} s", flush=True)
        vacuum(bench_db.dsn)

        # The floor, rolled back so the reset below finds the same rows due; then VACUUM
        # so the reset starts from the same table shape.
        with psycopg.connect(bench_db.dsn) as conn:
            with timed(figures, "floor"):
                floor_rows = conn.execute(FLOOR_SQL, {"now": NOW}).rowcount
            conn.rollback()
        vacuum(bench_db.dsn)

        database = Database(bench_db.settings())
        total = batches = 0
        with timed(figures, "reset"):
            while True:
                with database.session_scope() as session:
                    done = credits.reset_due(session, now=NOW, batch_size=batch_size)
                total += done
                batches += 1
                if done < batch_size:
                    break
        # Check the outcome, not just the speed: everyone reset once, nobody left due.
        with database.session_scope() as session:
            still_due = credits.reset_due(session, now=NOW, batch_size=batch_size)
            resets, users_reset = session.execute(
                text(
                    "SELECT count(*), count(DISTINCT user_id) FROM credit_ledger "
                    "WHERE reason = 'monthly_reset'"
                )
            ).one()
            wrong = session.execute(
                text(
                    "SELECT count(*) FROM users u JOIN plans p ON p.id = u.plan_id "
                    "WHERE u.plan_credits <> p.monthly_credits OR u.credits_reset_at <= :now"
                ),
                {"now": NOW},
            ).scalar_one()
        if AUDIT:
            with database.session_scope() as session, timed(figures, "audit"):
                assert credits.audit(session) == []
        database.dispose()

    assert floor_rows == USERS, floor_rows
    assert total == resets == users_reset == USERS, (total, resets, users_reset)
    assert wrong == 0 and still_due == 0, (wrong, still_due)
    return [
        USERS,
        batch_size,
        batches,
        figures["reset"],
        figures["floor"],
        figures["reset"] / figures["floor"],
        USERS / figures["reset"],
        figures.get("audit", "-"),
    ]


def main() -> None:
    rows = []
    for batch in BATCHES:
        rows.append(run(batch))
        print(
            f"  batch {batch:,}: reset {rows[-1][3]:.1f} s, floor {rows[-1][4]:.1f} s", flush=True
        )
    print_table(
        f"monthly reset of {USERS:,} due users (PostgreSQL, {NOW:%Y-%m-%d})",
        ["users", "batch", "batches", "reset s", "floor s", "ratio", "users/s", "audit s"],
        rows,
    )
    print("  floor = one bare UPDATE users SET plan_credits = allowance over the same rows")
    print("  reset = credits.reset_due until done: plan credits, next date, ledger row, commit")


if __name__ == "__main__":
    main()

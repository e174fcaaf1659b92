"""Auto-paging iterators walk every page exactly once, newest first."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import insert

from shared.accounts import service as accounts
from shared.base import utcnow
from shared.credits import service as credits
from shared.tasks.models import Task

N_TASKS = 250


def insert_tasks(database, clerk_id: str) -> list[tuple]:
    """250 finished tasks in one INSERT (creating them through the API would take the
    plan's concurrency limit and credits). Groups of five share a created_at, so the
    keyset's tie-breaker on id is exercised too. Returns (created_at, id, status) rows."""
    start = utcnow() - timedelta(hours=1)
    rows = []
    with database.session_scope() as session:
        user_id, _ = accounts.provision(session, clerk_id)
        for n in range(N_TASKS):
            created = start + timedelta(seconds=n // 5)
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "user_id": user_id,
                    "type": "echo" if n % 2 else "image_analysis",
                    "status": "succeeded" if n % 3 else "failed",
                    "input": {"n": n},
                    "output": {"n": n},
                    "progress": 1.0,
                    "cost": 0,
                    "cost_plan": 0,
                    "cost_purchased": 0,
                    "artifacts": [],
                    "attempts": 1,
                    "created_at": created,
                    "updated_at": created,
                    "completed_at": created,
                }
            )
        session.execute(insert(Task.__table__), rows)
    return sorted(((r["created_at"], r["id"], r) for r in rows), reverse=True)


def test_list_walks_all_250_tasks_newest_first(sx, committed):
    expected = insert_tasks(committed, "user_client")
    got = list(sx.tasks.list(page_size=7))
    assert len(got) == N_TASKS
    assert [t.id for t in got] == [str(row_id) for _, row_id, _ in expected]
    assert len({t.id for t in got}) == N_TASKS


def test_list_filters_and_limits(sx, committed):
    expected = insert_tasks(committed, "user_client")
    failed = [str(i) for _, i, r in expected if r["status"] == "failed"]
    assert [t.id for t in sx.tasks.list(status="failed", page_size=30)] == failed
    echoes = list(sx.tasks.list(type="echo", page_size=100))
    assert len(echoes) == N_TASKS // 2 and {t.type for t in echoes} == {"echo"}
    first = list(sx.tasks.list(limit=12, page_size=5))
    assert [t.id for t in first] == [str(i) for _, i, _ in expected[:12]]


def test_another_users_tasks_are_not_listed(base_url, sx, committed):
    insert_tasks(committed, "user_someone_else")
    assert list(sx.tasks.list()) == []


def test_transactions_walk_every_page(sx, committed):
    me = sx.me()
    with committed.session_scope() as session:
        for n in range(1, 31):
            credits.grant(session, uuid.UUID(me["id"]), n, "admin_grant")
    entries = list(sx.transactions(page_size=4))
    assert len(entries) == 31  # 30 grants and the signup grant
    assert [e.delta for e in entries] == [*range(30, 0, -1), 10]
    assert entries[0].balance_after == 10 + sum(range(1, 31))

"""`flask --app api credits ...`: the operator commands, against committed data.

The commands open and commit their own sessions, so these tests use `committed`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from shared.credits import service as credits
from tests.support.credits import balance, ledger_rows, make_user


@pytest.fixture()
def cli(app):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["credits", *args])


@pytest.fixture()
def alice(committed):
    with committed.session_scope() as session:
        return make_user(session, plan_credits=10, purchased_credits=2, clerk_id="user_alice")


def test_grant_by_clerk_id_and_by_user_id(cli, committed, alice):
    result = cli("grant", "user_alice", "25", "--reason", "support ticket 41")
    assert result.exit_code == 0, result.output
    assert f"granted 25 to {alice}; balance 37" in result.output

    result = cli("grant", str(alice), "5", "--reason", "bonus", "--bucket", "plan")
    assert result.exit_code == 0, result.output

    with committed.session_scope() as session:
        assert balance(session, alice) == (15, 27)
        rows = ledger_rows(session, alice, "admin_grant")
        assert [(r.bucket, r.delta, r.balance_after, r.note) for r in rows] == [
            ("purchased", 25, 37, "support ticket 41"),
            ("plan", 5, 42, "bonus"),
        ]
        assert credits.audit(session) == []


def test_grant_to_unknown_user_is_a_clear_error(cli, committed, alice):
    result = cli("grant", "user_nobody", "5", "--reason", "x")
    assert result.exit_code != 0
    assert "No user with id or Clerk id 'user_nobody'" in result.output
    assert "Traceback" not in result.output
    with committed.session_scope() as session:
        assert balance(session, alice) == (10, 2)


@pytest.mark.parametrize("amount", ["0", "-3", "many"])
def test_grant_refuses_a_non_positive_amount(cli, committed, alice, amount):
    result = cli("grant", "user_alice", amount, "--reason", "x")
    assert result.exit_code == 2  # a usage error, before anything is touched
    with committed.session_scope() as session:
        assert balance(session, alice) == (10, 2)


def test_grant_needs_a_reason(cli, alice):
    result = cli("grant", "user_alice", "5")
    assert result.exit_code == 2
    assert "--reason" in result.output


def test_show_prints_balance_and_latest_rows(cli, alice):
    cli("grant", "user_alice", "3", "--reason", "goodwill")
    result = cli("show", "user_alice")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"user {alice} (user_alice) plan=free" in lines[0]
    assert "plan_credits=10 purchased_credits=5 total=15" in lines[0]
    # Newest first.
    assert "admin_grant" in lines[1] and "+3 -> 15" in lines[1]
    assert "purchase" in lines[2] and "+2 -> 12" in lines[2]
    assert "signup_grant" in lines[3] and "+10 -> 10" in lines[3]


def test_show_unknown_user_fails(cli, committed):
    result = cli("show", "user_nobody")
    assert result.exit_code != 0
    assert "No user with id or Clerk id" in result.output


def test_reset_due_resets_only_due_users(cli, committed):
    now = datetime.now(UTC)
    with committed.session_scope() as session:
        due = [
            make_user(
                session,
                plan_credits=n,
                purchased_credits=1,
                plan_id="pro",
                reset_at=now - timedelta(days=n + 1),
            )
            for n in range(5)
        ]
        later = make_user(session, plan_credits=4, reset_at=now + timedelta(days=2))

    result = cli("reset-due", "--batch-size", "2")  # several batches
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "reset 5 users"

    with committed.session_scope() as session:
        assert [balance(session, user_id) for user_id in due] == [(500, 1)] * 5
        assert balance(session, later) == (4, 0)
        assert ledger_rows(session, later, "monthly_reset") == []
        assert credits.audit(session) == []

    again = cli("reset-due")
    assert again.exit_code == 0
    assert again.output.strip() == "reset 0 users"


def test_audit_passes_then_names_a_corrupted_user(cli, committed, alice):
    with committed.session_scope() as session:
        bob = make_user(session, plan_credits=10, clerk_id="user_bob")

    result = cli("audit")
    assert result.exit_code == 0, result.output
    assert "audit ok: 2 users" in result.output

    # Someone edits a balance behind the ledger's back.
    with committed.engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET purchased_credits = purchased_credits + 100 WHERE id = :id"),
            {"id": bob},
        )

    result = cli("audit")
    assert result.exit_code == 1
    assert "audit FAILED: 1 of 2 users" in result.output
    assert f"{bob}: plan 10 (ledger 10), purchased 100 (ledger 0)" in result.output
    assert str(alice) not in result.output
